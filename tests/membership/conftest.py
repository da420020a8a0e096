"""Keys and certificates shared by the membership tests: the document's test-vector keys (§15.9)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from p2pvpn import addressing
from p2pvpn.membership import cert
from p2pvpn.membership.network import ROLE_ADMIN, ROLE_RELAY, Signer, network_id, peer_id_bytes, signer_from_seed

T0 = 1767225600  # 2026-01-01T00:00:00Z
DAY = 86400


@dataclass
class Net:
    owner: Signer
    nid: str
    keys: dict[int, Signer]
    pids: dict[int, bytes]
    admin_cert: bytes

    def admin_signer(self, n: int = 1) -> Signer:
        return signer_from_seed(bytes([n]) * 32, self.admin_cert)

    def issue(self, signer: Signer, n: int, *, name: str = "", roles: int = 0, groups: tuple[str, ...] = (),
              not_before: int = T0, lifetime: int = 7 * DAY) -> bytes:
        a = addressing.derive(self.pids[n], self.nid)
        return cert.issue(signer, network=self.nid, peer_id=self.pids[n], name=name or f"peer{n}", ipv4=a.ipv4,
                          ipv6=a.ipv6, roles=roles, groups=groups, not_before=not_before,
                          not_after=not_before + lifetime)


@pytest.fixture(scope="session")  # immutable: shared by hypothesis examples too
def net() -> Net:
    owner = signer_from_seed(bytes([0x10]) * 32)
    nid = network_id(owner.public_key)
    keys = {n: signer_from_seed(bytes([n]) * 32) for n in range(1, 6)}
    pids = {n: peer_id_bytes(s.public_key) for n, s in keys.items()}
    a = addressing.derive(pids[1], nid)
    admin_cert = cert.issue(owner, network=nid, peer_id=pids[1], name="alpha", ipv4=a.ipv4, ipv6=a.ipv6,
                            roles=ROLE_ADMIN | ROLE_RELAY, groups=(), not_before=T0, not_after=T0 + 365 * DAY)
    return Net(owner, nid, keys, pids, admin_cert)
