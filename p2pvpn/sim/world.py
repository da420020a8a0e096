"""The members of a simulated owned network: real keys, real certificates, real signed records.

Everything here is the project's real code, run in process: an owner key
signs each member's certificate with :func:`p2pvpn.membership.authority.admit`
(names and addresses allocated as ``p2pvpn admit`` does), each member
seals its :class:`p2pvpn.discovery.record.NodeRecord` (carrying the
certificate) with its own Ed25519 key, and every record a simulated node
receives is opened and judged by :class:`p2pvpn.discovery.record.RecordValidator`
(signature, peer, network, expiry, certificate, addresses).

Opening a record costs ~0.3 ms; a 1,000-node round of the current design
opens a million. :meth:`World.open` therefore judges each distinct
sealed value once and remembers the verdict: the *count* of validations
a reader would do is kept (:attr:`World.validations`), the work is not
repeated.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import dataclass, field

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn.discovery import record as rec
from p2pvpn.membership import authority, cert
from p2pvpn.membership.network import network_id, signer_from_seed
from p2pvpn.sim.kademlia import kad_key

START = 1_800_000_000.0  # the simulation's wall clock at virtual time 0 (unix seconds)
TTL = 300  # record TTL, the node default (config.record_ttl)


@dataclass
class Member:
    index: int
    key_pair: KeyPair
    peer_id: ID
    position: int  # kad_key(peer ID bytes)
    record_key: str
    record_position: int  # kad_key(record key)
    certificate: bytes
    sealed: bytes
    addresses: tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]  # overlay, from the certificate
    record: rec.NodeRecord  # what ``sealed`` seals (its overlay addresses name the address keys)


@dataclass
class World:
    network: str
    members: list[Member]
    validator: rec.RecordValidator
    validations: int = 0
    rejected: int = 0
    _verdicts: dict[bytes, bool] = field(default_factory=dict)

    def open(self, index: int, sealed: bytes) -> bool:
        """Whether ``sealed`` is a valid record of member ``index`` (the real validator; one run per value)."""
        self.validations += 1
        digest = hashlib.sha256(index.to_bytes(4, "big") + sealed).digest()
        verdict = self._verdicts.get(digest)
        if verdict is None:
            try:
                self.validator.open(self.members[index].peer_id, sealed)
                verdict = True
            except rec.RecordError:
                verdict = False
            self._verdicts[digest] = verdict
        if not verdict:
            self.rejected += 1
        return verdict

    @property
    def positions(self) -> list[int]:
        return [m.position for m in self.members]


def build(n: int, seed: int) -> World:
    """``n`` members of one owned network, deterministic for ``seed``."""
    rng = random.Random(seed)
    owner = signer_from_seed(rng.randbytes(32))
    nid = network_id(owner.public_key)
    issued: list[cert.Certificate] = []
    members: list[Member] = []
    for i in range(n):
        key_pair = create_new_key_pair(rng.randbytes(32))
        peer = ID.from_pubkey(key_pair.public_key)
        admission = authority.admit(owner, nid, peer.to_bytes(), issued=issued, revoked={}, now=START,
                                    name=f"m{i}")  # fmt: skip
        opened = cert.open_certificate(admission.certificate, nid)
        issued.append(opened)
        addr = f"/ip4/198.18.{i // 250}.{i % 250 + 1}/tcp/4242"
        record = rec.make_record(peer, nid, seq=int(START * 1000), now=START, ttl=TTL, addrs=[addr],
                                 certificate=admission.certificate)  # fmt: skip
        key = rec.record_key(nid, peer)
        members.append(Member(i, key_pair, peer, kad_key(peer.to_bytes()), key, kad_key(key.encode()),
                              admission.certificate, rec.seal(record, key_pair.private_key),
                              (opened.ipv4, opened.ipv6), record))  # fmt: skip
    validator = rec.RecordValidator(nid, clock=lambda: START + 1, revocations=lambda: {})
    return World(nid, members, validator)


def provider_position(world: World, role: str = "members") -> int:
    """Where the provider key of ``role`` sits in the XOR space (py-libp2p hashes the multihash bytes)."""
    return kad_key(bytes.fromhex(rec.provider_key(world.network, role)))
