"""Revocation lists: sign, open, select and merge (docs/protocol.md §15.5).

A revocation names a peer ID and a time and voids every certificate of that
peer whose ``not_before`` is earlier, whatever its bytes. Lists are signed by
the owner or an admin and numbered; every node keeps the union of all valid
lists it has seen (per peer the latest time), which is what ``RevocationSet``
holds. Entries can be forgotten once no certificate they void can still be
valid (``not_before + MAX_LIFETIME + CLOCK_SKEW`` has passed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pvpn.membership import canonical
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.cert import CLOCK_SKEW, MAX_LIFETIME, Certificate, check, open_certificate, verify_signature
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, Signer, is_network_id, network_id, peer_id_bytes, public_key_of

REVOCATION_CONTEXT = b"p2pvpn/membership/revocation-list/1\x00"
MAX_REVOCATIONS = 1024
MAX_LIST_SIZE = 65536


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A list whose bytes, signer and signature are good."""

    network_id: str
    seq: int
    entries: dict[bytes, int]
    issuer: bytes
    admin: Certificate | None
    raw: bytes


def sign_list(signer: Signer, network: str, seq: int, entries: Mapping[bytes, int]) -> bytes:
    """Sign a list holding ``entries`` (peer_id_bytes -> not_before); returns SignedRevocationList bytes."""
    if len(entries) > MAX_REVOCATIONS:
        raise MembershipError(f"revocation list: more than {MAX_REVOCATIONS} entries")
    body = pb.RevocationList(
        network_id=network, seq=seq, issuer=signer.public_key,
        revocations=[pb.Revocation(peer_id=p, not_before=t) for p, t in sorted(entries.items())],
    )
    body_bytes = canonical.encode(body)
    signed = pb.SignedRevocationList(revocation_list=body_bytes,
                                     signature=signer.sign(REVOCATION_CONTEXT + body_bytes))
    if signer.issuer_certificate is not None:
        signed.issuer_certificate.ParseFromString(signer.issuer_certificate)
    data = canonical.encode(signed)
    open_bytes(data, network)
    return data


def open_bytes(data: bytes, expected_network: str) -> RevocationList:
    """Bytes, signer and signature (no clock): for lists this node already accepted and stored."""
    if len(data) > MAX_LIST_SIZE:
        raise MembershipError(f"revocation list is {len(data)} bytes, more than {MAX_LIST_SIZE}")
    signed = canonical.parse(pb.SignedRevocationList, data, "revocation list")
    body = canonical.parse(pb.RevocationList, signed.revocation_list, "revocation list body")
    if not is_network_id(body.network_id) or body.network_id != expected_network:
        raise MembershipError(f"revocation list is for network {body.network_id!r}, not {expected_network}")
    if len(body.revocations) > MAX_REVOCATIONS:
        raise MembershipError(f"revocation list: more than {MAX_REVOCATIONS} entries")
    peers = [r.peer_id for r in body.revocations]
    if not all(public_key_of(p) is not None for p in peers):
        raise MembershipError("revocation list: an entry's peer_id is not an Ed25519 peer ID")
    if any(a >= b for a, b in zip(peers, peers[1:])):
        raise MembershipError("revocation list: entries must be sorted by peer_id, one per peer")
    if any(r.not_before == 0 for r in body.revocations):
        raise MembershipError("revocation list: an entry has not_before 0")
    if len(body.issuer) != 32 or len(signed.signature) != 64:
        raise MembershipError("revocation list: issuer must be 32 bytes and signature 64 bytes")
    admin: Certificate | None = None
    if signed.HasField("issuer_certificate"):
        admin = open_certificate(signed.issuer_certificate.SerializeToString(deterministic=True), expected_network,
                                 _depth=1)
        if not admin.has_role(ROLE_ADMIN) or admin.peer_id != peer_id_bytes(body.issuer):
            raise MembershipError("revocation list: signer is not the admin of the attached certificate")
    elif network_id(body.issuer) != expected_network:
        raise MembershipError("revocation list: issuer is neither the network owner nor an admin")
    if not verify_signature(body.issuer, REVOCATION_CONTEXT, signed.revocation_list, signed.signature):
        raise MembershipError("revocation list: bad signature")
    return RevocationList(
        network_id=body.network_id, seq=body.seq, entries={r.peer_id: r.not_before for r in body.revocations},
        issuer=body.issuer, admin=admin, raw=data,
    )


def open_list(data: bytes, expected_network: str, now: float, revoked: Mapping[bytes, int]) -> RevocationList:
    """The validation of §15.5: bytes and signature, then the admin's certificate at ``now``."""
    lst = open_bytes(data, expected_network)
    if lst.admin is not None:
        check(lst.admin, now, revoked)
    return lst


def better(a: RevocationList, b: RevocationList) -> bool:
    """Whether ``a`` beats ``b`` as the network's current list (DHT select): higher seq, then larger bytes."""
    return (a.seq, a.raw) > (b.seq, b.raw)


@dataclass
class RevocationSet:
    """What a node knows: the union of every valid list it saw, and the best list to pass on."""

    network_id: str
    entries: dict[bytes, int] = field(default_factory=dict)
    best: RevocationList | None = None

    @property
    def seq(self) -> int:
        return self.best.seq if self.best else 0

    def merge(self, lst: RevocationList) -> set[bytes]:
        """Take in a valid list; returns the peers whose threshold moved (their tunnels need re-checking)."""
        if lst.network_id != self.network_id:
            raise MembershipError("revocation list of another network")
        changed = set()
        for peer, not_before in lst.entries.items():
            if not_before > self.entries.get(peer, 0):
                self.entries[peer] = not_before
                changed.add(peer)
        if self.best is None or better(lst, self.best):
            self.best = lst
        return changed

    def merge_bytes(self, data: bytes, now: float) -> set[bytes]:
        return self.merge(open_list(data, self.network_id, now, self.entries))

    def prune(self, now: float) -> None:
        """Forget entries that can no longer void any valid certificate."""
        horizon = now - MAX_LIFETIME - 2 * CLOCK_SKEW
        self.entries = {p: t for p, t in self.entries.items() if t > horizon}

    def publish(self, signer: Signer, now: float, add: Mapping[bytes, int] = {}) -> bytes:
        """A new list from this signer: everything known plus ``add``, numbered above every list seen."""
        self.prune(now)
        merged = dict(self.entries)
        for peer, not_before in add.items():
            merged[peer] = max(not_before, merged.get(peer, 0))
        data = sign_list(signer, self.network_id, self.seq + 1, merged)
        self.merge_bytes(data, now)
        return data
