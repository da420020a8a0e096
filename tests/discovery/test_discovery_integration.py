"""A running node against forged records injected into the private DHT (in-process, no root).

Cast, all real libp2p hosts on loopback (p2pvpn.testing.cluster)::

    n0 (bootstrap) ── n1 (the honest node we watch, bootstrap n0)
          └──────┬──────┘
        rogue hosts: each joins the DHT, announces itself as a member
        ("members" provider) and publishes a bad record under its own key

A rogue runs py-libp2p's KadDHT on our protocol with a validator that accepts
anything, so it sends its bad record as a real PUT_VALUE and serves it on
GET_VALUE, which is what a malicious or broken implementation would do. The
bad records: tampered after signing, signed by a key other than the peer
ID's, expired, and of another network. Two ways in:

* through the network: the honest nodes refuse the PUT (their validator
  runs before storing), so neither stores or serves it; when n1 then asks
  the rogue itself, the value it gets back fails validation again and n1
  never learns, routes or dials the rogue;
* already in n1's value store (as if a bug or an older version had let it
  in): py-libp2p answers lookups from the local store unvalidated, so n1
  must drop such a copy (p2pvpn.discovery.dht.Dht.get_record), stop
  serving it, and still not learn the rogue;
* handed to discovery by a DHT layer that did not validate at all:
  discovery verifies every record again, refuses it and counts it in
  ``status()["discovery"]["rejected_records"]``.

A rogue host with a valid record, sent the same way, is learned: the
control that shows the injection path reaches n1 at all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.validator import NamespacedValidator, Validator

from p2pvpn import addressing, identity
from p2pvpn.discovery import dht as dht_module
from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.host import Host
from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, free_port, running

NETWORK = "default"
HONEST = {"record_ttl": 60.0, "discovery_interval": 0.3, "keepalive": 1.0}
ROGUE_TTL = 60
SEEN_WITHIN = 20.0   # seconds for n1 to see a rogue as a member candidate (its ADD_PROVIDER arrived)
ROUNDS_AFTER = 5     # discovery rounds n1 must complete after that before we judge
JUDGE_WITHIN = 30.0  # seconds for those rounds

Forge = Callable[[KeyPair, list[str]], bytes]


# -- forging ------------------------------------------------------------------------------


def _valid_record(key_pair: KeyPair, addrs: list[str], *, network: str = NETWORK, ttl: int = ROGUE_TTL,
                  now: float | None = None) -> rec.NodeRecord:  # fmt: skip
    now = time.time() if now is None else now
    return rec.make_record(identity.peer_id(key_pair), network, seq=int(now * 1000), now=now, ttl=ttl, addrs=addrs)


def valid(key_pair: KeyPair, addrs: list[str]) -> bytes:
    return rec.seal(_valid_record(key_pair, addrs), key_pair.private_key)


def tampered(key_pair: KeyPair, addrs: list[str]) -> bytes:
    """Sealed correctly, then the payload edited (another address to dial) without re-signing."""
    envelope = pb.Envelope.FromString(valid(key_pair, addrs))
    record = pb.NodeRecord.FromString(envelope.payload)
    del record.addrs[:]
    record.addrs.append(multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9").to_bytes())
    envelope.payload = record.SerializeToString()
    return envelope.SerializeToString()


def signed_by_another_key(key_pair: KeyPair, addrs: list[str]) -> bytes:
    """The rogue's own record (its peer ID, its key in the DHT), but signed with a different key."""
    other = create_new_key_pair()
    payload = rec._record_to_pb(_valid_record(key_pair, addrs)).SerializeToString()
    return rec._seal_payload(payload, other.private_key)


def expired(key_pair: KeyPair, addrs: list[str]) -> bytes:
    """Properly signed, but its lifetime ended a minute ago."""
    return rec.seal(_valid_record(key_pair, addrs, now=time.time() - 120, ttl=60), key_pair.private_key)


def other_network(key_pair: KeyPair, addrs: list[str]) -> bytes:
    """Properly signed, for network "elsewhere", stored under our network's key."""
    return rec.seal(_valid_record(key_pair, addrs, network="elsewhere"), key_pair.private_key)


BAD: dict[str, Forge] = {
    "tampered": tampered,
    "signed-by-another-key": signed_by_another_key,
    "expired": expired,
    "other-network": other_network,
}


# -- a rogue DHT node ---------------------------------------------------------------------


class AcceptAnything(Validator):
    """What a malicious or broken implementation validates with."""

    def validate(self, key: str, value: bytes) -> None:
        return None

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


@dataclass
class Rogue:
    name: str
    key_pair: KeyPair
    host: Host
    kad: object
    requested: list[bytes] = field(default_factory=list)  # keys other peers asked it for (GET_VALUE)

    @property
    def peer_id(self) -> ID:
        return self.host.peer_id

    @property
    def key(self) -> str:
        return rec.record_key(NETWORK, self.peer_id)

    @property
    def ipv4(self) -> object:
        return addressing.derive(self.peer_id.to_bytes(), NETWORK).ipv4

    async def join(self, nodes: list[Node], value: bytes) -> None:
        """Connect to ``nodes``, PUT ``value`` under our key, announce ourselves as a member."""
        kad = self.kad
        for node in nodes:
            assert node.host is not None
            addrs = [multiaddr.Multiaddr(a).decapsulate(multiaddr.Multiaddr(f"/p2p/{node.peer_id}"))
                     for a in node.host.addrs()]  # fmt: skip
            await self.host.libp2p.connect(PeerInfo(node.peer_id, addrs))
            await kad.add_peer(node.peer_id)  # type: ignore[attr-defined]
        with trio.fail_after(20):
            await kad.put_value(self.key, value)  # type: ignore[attr-defined]
            await kad.provide(rec.provider_key(NETWORK, "members"))  # type: ignore[attr-defined]
        self.requested.clear()


@asynccontextmanager
async def rogue(name: str, accept_anything: bool = True) -> AsyncIterator[Rogue]:
    """A libp2p host with a KadDHT server on our protocol; its validator accepts anything unless told not to."""
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.tools.anyio_service import background_trio_service

    dht_module._use_our_protocol_id()
    key_pair = create_new_key_pair()
    host = Host(key_pair, [f"/ip4/127.0.0.1/tcp/{free_port()}"])
    checker: Validator = AcceptAnything() if accept_anything else rec.RecordValidator(NETWORK)
    kad = KadDHT(
        host.libp2p, DHTMode.SERVER,
        validator=NamespacedValidator({rec.KEY_NAMESPACE: checker}, strict_validation=True),
        validator_changed=True, protocol_prefix=dht_module.PROTOCOL_PREFIX, strict_validation=True,
    )  # fmt: skip
    me = Rogue(name, key_pair, host, kad)
    real_get = kad.value_store.get

    def recording_get(key: bytes) -> object:
        me.requested.append(key)
        return real_get(key)

    kad.value_store.get = recording_get  # type: ignore[method-assign]
    async with host.running(), background_trio_service(kad):
        yield me


# -- what n1 knows ------------------------------------------------------------------------


def members_key() -> bytes:
    return bytes.fromhex(rec.provider_key(NETWORK, "members"))


def sees_as_candidate(node: Node, peer_id: ID) -> bool:
    """Whether ``node`` has ``peer_id`` among the "members" providers it will fetch records of."""
    assert node.discovery is not None
    return any(p.peer_id == peer_id for p in node.discovery.dht.kad.provider_store.get_providers(members_key()))


def stores(node: Node, key: str) -> bool:
    assert node.discovery is not None
    return node.discovery.dht.kad.value_store.get(key.encode()) is not None


def learned(node: Node, peer_id: ID) -> bool:
    assert node.manager is not None and node.discovery is not None
    return peer_id in node.manager.peers or peer_id in node.discovery.known


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)


async def rounds_pass(node: Node, count: int, timeout: float = JUDGE_WITHIN) -> None:
    """Wait until ``node`` completed ``count`` more discovery rounds."""
    assert node.discovery is not None
    target = node.discovery.rounds + count + 1  # +1: the round in progress may have started before
    await until(lambda: node.discovery.rounds >= target, timeout, f"{count} discovery rounds")  # type: ignore[union-attr]


@asynccontextmanager
async def honest_pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    cluster = Cluster(tmp_path)
    n0 = cluster.node("n0", **HONEST)
    n1 = cluster.node("n1", bootstrap=[cluster.addr("n0")], **HONEST)
    async with running(n0, n1):
        await until(lambda: n1.discovery is not None and n1.discovery.dht.routing_table_size() > 0, 20, "bootstrap")
        yield n0, n1


# -- the tests ----------------------------------------------------------------------------


async def test_bad_records_sent_through_the_dht_are_neither_stored_served_nor_learned(tmp_path: Path) -> None:
    async with honest_pair(tmp_path) as (n0, n1), AsyncExitStack() as stack:
        control = await stack.enter_async_context(rogue("control", accept_anything=False))
        rogues = {kind: await stack.enter_async_context(rogue(kind)) for kind in BAD}
        addrs = lambda r: [f"/ip4/127.0.0.1/tcp/{r.host.listen_addrs[0].value_for_protocol('tcp')}"]  # noqa: E731
        await control.join([n0, n1], valid(control.key_pair, addrs(control)))
        for kind, r in rogues.items():
            await r.join([n0, n1], BAD[kind](r.key_pair, addrs(r)))

        # The control's record is learned: the injection path reaches n1.
        await until(lambda: learned(n1, control.peer_id), SEEN_WITHIN + JUDGE_WITHIN, "the control learned")
        assert n1.manager.peers[control.peer_id].learned_from == "dht"
        assert n1.manager.routes.lookup(control.ipv4.packed) == control.peer_id  # type: ignore[attr-defined]

        for r in rogues.values():
            await until(lambda r=r: sees_as_candidate(n1, r.peer_id), SEEN_WITHIN, f"{r.name} as a member candidate")
        await rounds_pass(n1, ROUNDS_AFTER)

        for kind, r in rogues.items():
            for node in (n0, n1):
                assert not stores(node, r.key), f"{node.config.tun} stored the {kind} record (PUT not refused)"
            assert r.requested, f"n1 never asked the {kind} rogue for its record: the test proves nothing"
            assert not learned(n1, r.peer_id), f"n1 learned the peer of the {kind} record"
            assert n1.manager.routes.lookup(r.ipv4.packed) is None, f"n1 routes to the {kind} rogue"  # type: ignore[attr-defined]
            assert all(p["peer_id"] != str(r.peer_id) for p in n1.peers()), f"n1 lists the {kind} rogue"


async def test_bad_records_already_in_the_local_store_are_dropped_not_served_nor_learned(tmp_path: Path) -> None:
    async with honest_pair(tmp_path) as (n0, n1), AsyncExitStack() as stack:
        assert n1.discovery is not None
        store = n1.discovery.dht.kad.value_store
        rogues = {kind: await stack.enter_async_context(rogue(kind)) for kind in BAD}
        for kind, r in rogues.items():
            bad = BAD[kind](r.key_pair, [f"/ip4/127.0.0.1/tcp/{r.host.listen_addrs[0].value_for_protocol('tcp')}"])
            store.put(r.key.encode(), bad)  # behind the validator's back
            assert stores(n1, r.key)
            await r.join([n0, n1], bad)  # announces itself as a member, so n1 fetches its record

        for r in rogues.values():
            await until(lambda r=r: sees_as_candidate(n1, r.peer_id), SEEN_WITHIN, f"{r.name} as a member candidate")
        await rounds_pass(n1, ROUNDS_AFTER)
        any_rogue = next(iter(rogues.values()))
        for kind, r in rogues.items():
            assert not stores(n1, r.key), f"n1 still holds the {kind} record after {ROUNDS_AFTER} rounds"
            with trio.fail_after(10):  # asked directly, n1 no longer serves it
                served = await any_rogue.kad.value_store._get_from_peer(n1.peer_id, r.key.encode())  # type: ignore[attr-defined]
            assert not served, f"n1 still serves the {kind} record"
            assert not learned(n1, r.peer_id), f"n1 learned the peer of the {kind} record"
            assert n1.manager.routes.lookup(r.ipv4.packed) is None, f"n1 routes to the {kind} rogue"  # type: ignore[union-attr, attr-defined]
            assert all(p["peer_id"] != str(r.peer_id) for p in n1.peers()), f"n1 lists the {kind} rogue"


async def test_discovery_verifies_what_the_dht_hands_it_and_counts_rejections(tmp_path: Path) -> None:
    async with honest_pair(tmp_path) as (n0, n1), AsyncExitStack() as stack:
        assert n1.discovery is not None
        rogues = {kind: await stack.enter_async_context(rogue(kind)) for kind in BAD}
        bad_values: dict[ID, bytes] = {}
        for kind, r in rogues.items():
            bad_values[r.peer_id] = BAD[kind](r.key_pair, [f"/ip4/127.0.0.1/tcp/{r.host.listen_addrs[0].value_for_protocol('tcp')}"])
            await r.join([n0, n1], bad_values[r.peer_id])
        dht = n1.discovery.dht
        real_get_record = dht.get_record

        async def unvalidated_get_record(peer_id: ID) -> bytes | None:  # a DHT that skips validation
            return bad_values.get(peer_id) or await real_get_record(peer_id)

        dht.get_record = unvalidated_get_record  # type: ignore[method-assign]
        for r in rogues.values():
            await until(lambda r=r: sees_as_candidate(n1, r.peer_id), SEEN_WITHIN, f"{r.name} as a member candidate")
        before = n1.status()["discovery"]["rejected_records"]
        await rounds_pass(n1, 2)
        assert n1.status()["discovery"]["rejected_records"] - before >= len(BAD)  # each, at least once
        for kind, r in rogues.items():
            assert not learned(n1, r.peer_id), f"n1 learned the peer of the {kind} record"
            assert n1.manager.routes.lookup(r.ipv4.packed) is None, f"n1 routes to the {kind} rogue"  # type: ignore[union-attr, attr-defined]
