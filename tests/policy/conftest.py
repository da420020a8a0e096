"""The document's keys (§15.10) and a network for the policy tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from p2pvpn.membership.network import Signer, network_id, peer_id_bytes, signer_from_seed


@dataclass(frozen=True)
class Keys:
    owner: Signer
    nid: str
    pid: dict[int, bytes]


@pytest.fixture(scope="session")
def keys() -> Keys:
    owner = signer_from_seed(bytes([0x10]) * 32)
    pid = {n: peer_id_bytes(signer_from_seed(bytes([n]) * 32).public_key) for n in range(1, 5)}
    return Keys(owner, network_id(owner.public_key), pid)
