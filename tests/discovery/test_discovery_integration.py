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

A rogue host with a valid record, sent the same way, is learned (its
record is verified and kept by discovery): the control that shows the
injection path reaches n1 at all. In this network without owner it still
gets no route or tunnel: it is not listed (docs/protocol.md §10).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from p2pvpn.testing.dhts import until

NETWORK = "default"
HONEST = {"record_ttl": 60.0, "discovery_interval": 0.3, "keepalive": 1.0}
ROGUE_TTL = 60
SEEN_WITHIN = 60.0   # seconds for n1 to see a rogue as a member candidate (its ADD_PROVIDER arrived)
ROUNDS_AFTER = 5     # discovery rounds n1 must complete after that before we judge
JUDGE_WITHIN = 120.0 # seconds for those rounds

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
    async with host.running(), background_trio_service(kad):
        yield Rogue(name, key_pair, host, kad)


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


async def rounds_pass(node: Node, count: int, timeout: float = JUDGE_WITHIN) -> bool:
    """Wait until ``node`` completed ``count`` more discovery rounds."""
    assert node.discovery is not None
    target = node.discovery.rounds + count + 1  # +1: the round in progress may have started before
    return await until(lambda: node.discovery.rounds >= target, timeout)  # type: ignore[union-attr]


def tcp_addr(r: Rogue) -> list[str]:
    return [f"/ip4/127.0.0.1/tcp/{r.host.listen_addrs[0].value_for_protocol('tcp')}"]


@asynccontextmanager
async def honest_pair_and_rogues(tmp_path: Path, kinds: list[str]) -> AsyncIterator[tuple[Node, Node, dict[str, Rogue]]]:
    """n0 and n1 running and bootstrapped, plus one (not yet joined) rogue per kind."""
    cluster = Cluster(tmp_path)
    n0 = cluster.node("n0", **HONEST)
    n1 = cluster.node("n1", bootstrap=[cluster.addr("n0")], **HONEST)
    async with running(n0, n1), AsyncExitStack() as stack:
        bootstrapped = await until(lambda: n1.discovery is not None and n1.discovery.dht.routing_table_size() > 0, 20)
        assert bootstrapped, "n1 did not bootstrap from n0 within 20 s"
        rogues = {}
        for kind in kinds:
            rogues[kind] = await stack.enter_async_context(rogue(kind, accept_anything=kind != "control"))
        yield n0, n1, rogues


async def judged_after_rounds(n1: Node, rogues: dict[str, Rogue]) -> list[str]:
    """Wait until n1 sees every rogue as a member candidate, then ROUNDS_AFTER rounds; problems so far."""
    for r in rogues.values():
        if not await until(lambda r=r: sees_as_candidate(n1, r.peer_id), SEEN_WITHIN):
            return [f"n1 never saw the {r.name} rogue as a member candidate: the test proves nothing"]
    if not await rounds_pass(n1, ROUNDS_AFTER):
        return [f"n1 did not complete {ROUNDS_AFTER} discovery rounds within {JUDGE_WITHIN:g} s"]
    return []


def not_learned(n1: Node, kind: str, r: Rogue) -> list[str]:
    assert n1.manager is not None
    problems = []
    if learned(n1, r.peer_id):
        problems.append(f"n1 learned the peer of the {kind} record")
    if n1.manager.routes.lookup(r.ipv4.packed) is not None:  # type: ignore[attr-defined]
        problems.append(f"n1 routes to the {kind} rogue")
    if any(p["peer_id"] == str(r.peer_id) for p in n1.peers()):
        problems.append(f"n1 lists the {kind} rogue among its peers")
    return problems


# -- the tests ----------------------------------------------------------------------------
# Each scenario returns its problems and the test asserts outside the libp2p
# nurseries, so a failure reads as one line rather than nested exception groups.


async def test_bad_records_sent_through_the_dht_are_neither_stored_served_nor_learned(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with honest_pair_and_rogues(tmp_path, ["control", *BAD]) as (n0, n1, rogues):
            control = rogues.pop("control")
            assert n1.discovery is not None
            asked: set[tuple[ID, bytes]] = set()  # (peer, key) n1 sent GET_VALUE to
            store = n1.discovery.dht.kad.value_store
            real_get_from_peer = store._get_from_peer

            async def recording_get_from_peer(peer: ID, key: bytes, *args: object, **kwargs: object) -> object:
                asked.add((peer, key))
                return await real_get_from_peer(peer, key, *args, **kwargs)

            store._get_from_peer = recording_get_from_peer  # type: ignore[method-assign]
            await control.join([n0, n1], valid(control.key_pair, tcp_addr(control)))
            for kind, r in rogues.items():
                await r.join([n0, n1], BAD[kind](r.key_pair, tcp_addr(r)))

            # The control's valid record, sent the same way, is learned: the path reaches n1.
            if not await until(lambda: learned(n1, control.peer_id), SEEN_WITHIN + JUDGE_WITHIN):
                return ["n1 never learned the control's valid record: the injection path does not reach it"]
            assert n1.manager is not None and n1.discovery is not None
            problems = []
            if control.peer_id not in n1.discovery.known:
                problems.append("n1's discovery does not hold the control's verified record")
            if n1.manager.routes.lookup(control.ipv4.packed) is not None or control.peer_id in n1.manager.peers:  # type: ignore[attr-defined]
                problems.append("n1 routes to the control, which is not listed: records alone must not admit a peer")

            problems += await judged_after_rounds(n1, rogues)
            for kind, r in rogues.items():
                for name, node in (("n0", n0), ("n1", n1)):
                    if stores(node, r.key):
                        problems.append(f"{name} stored the {kind} record (its PUT was not refused)")
                if (r.peer_id, r.key.encode()) not in asked:
                    problems.append(f"n1 never asked the {kind} rogue for its record: the test proves nothing")
                problems += not_learned(n1, kind, r)
            return problems

    problems = await scenario()
    assert not problems, "\n".join(problems)


async def test_bad_records_already_in_the_local_store_are_dropped_not_served_nor_learned(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with honest_pair_and_rogues(tmp_path, list(BAD)) as (n0, n1, rogues):
            assert n1.discovery is not None
            store = n1.discovery.dht.kad.value_store
            for kind, r in rogues.items():
                bad = BAD[kind](r.key_pair, tcp_addr(r))
                store.put(r.key.encode(), bad)  # behind the validator's back
                assert stores(n1, r.key)
                await r.join([n0, n1], bad)  # announces itself as a member, so n1 fetches its record

            problems = await judged_after_rounds(n1, rogues)
            asker = next(iter(rogues.values()))
            for kind, r in rogues.items():
                if stores(n1, r.key):
                    problems.append(f"n1 still holds the {kind} record after {ROUNDS_AFTER} rounds")
                with trio.move_on_after(10):  # asked directly, n1 no longer serves it
                    if await asker.kad.value_store._get_from_peer(n1.peer_id, r.key.encode()):  # type: ignore[attr-defined]
                        problems.append(f"n1 still serves the {kind} record")
                problems += not_learned(n1, kind, r)
            return problems

    problems = await scenario()
    assert not problems, "\n".join(problems)


async def test_discovery_verifies_what_the_dht_hands_it_and_counts_rejections(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with honest_pair_and_rogues(tmp_path, list(BAD)) as (n0, n1, rogues):
            assert n1.discovery is not None
            bad_values = {r.peer_id: BAD[kind](r.key_pair, tcp_addr(r)) for kind, r in rogues.items()}
            for r in rogues.values():
                await r.join([n0, n1], bad_values[r.peer_id])
            dht = n1.discovery.dht
            real_get_record = dht.get_record

            async def unvalidated_get_record(peer_id: ID, *args: Any, **kwargs: Any) -> bytes | None:  # skips validation
                return bad_values.get(peer_id) or await real_get_record(peer_id, *args, **kwargs)

            dht.get_record = unvalidated_get_record  # type: ignore[method-assign]
            before = n1.status()["discovery"]["rejected_records"]
            problems = await judged_after_rounds(n1, rogues)
            rejected = n1.status()["discovery"]["rejected_records"] - before
            if rejected < len(BAD):  # each of them, in at least one round
                problems.append(f"only {rejected} rejections counted for {len(BAD)} bad records over {ROUNDS_AFTER} rounds")
            for kind, r in rogues.items():
                problems += not_learned(n1, kind, r)
            return problems

    problems = await scenario()
    assert not problems, "\n".join(problems)
