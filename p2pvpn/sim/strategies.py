"""Discovery strategies the simulator can run: how a node announces itself and finds a member's addresses.

A strategy is pluggable (:class:`Strategy`): ``publish`` (a node
announces itself), ``round`` (what an idle node does every discovery
interval), ``find`` (a node needs member ``dst``'s addresses, e.g. its
first packet for ``dst`` arrived at the TUN) and ``coverage`` (which
members any node can find at all). The other discovery designs (roster
pages, records merged along tunnels, on-demand tunnels) plug in here as
further classes, driving their own sans-IO modules.

* :class:`MembersKey`, **the current design** (p2pvpn/discovery/service.py
  and dht.py at the time of writing): every member provides one key,
  "members", and stores its record under its own key; every round a node
  asks the k peers closest to "members" for providers (their closest peers
  re-walked at most every 30 s), and fetches from its owner each provider's
  record whose copy is in the second half of its life. py-libp2p's
  provider store keeps the first 20 providers of a key and ignores later
  ones (``ProviderStore.add_provider``): that cap is modeled exactly.
* :class:`AddressKey`, **address records** (the node's own,
  docs/protocol.md §18): as :class:`PerKey`, and each member also
  stores its record under one key per overlay address
  (``/p2pvpn/<net>/addr/<ip>``); a first packet for an overlay address
  looks up that key. Three stores per member instead of one.
* :class:`PerKey`, **a per-key lookup design**: every member stores its
  record under its own key at the k closest peers (republished every
  TTL/2); an idle node does nothing else. A node that needs a member's
  addresses (it knows the member's peer ID from its certificate) runs one
  iterative GET_VALUE lookup for that member's key and stops at the first
  valid record.

Both use the same walk (:class:`p2pvpn.sim.kademlia.Lookup`, the real
state machine), the same routing tables and the same real records.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from p2pvpn.sim.engine import Net, Sim
from p2pvpn.discovery import record as rec
from p2pvpn.sim.kademlia import K, Lookup, RoutingTable, kad_key
from p2pvpn.sim.world import TTL, World, provider_position

INTERVAL = 10.0  # seconds between discovery rounds (config.discovery_interval)
CLOSEST_REUSE = 30.0  # seconds a walk to the provider key is reused (discovery/dht.py)
PROVIDER_CAP = 20  # providers py-libp2p keeps per key


@dataclass
class Ctx:
    """What a strategy runs on: the members, their routing tables, the clock and the network."""

    world: World
    table: RoutingTable
    sim: Sim
    net: Net
    rng: random.Random


@dataclass
class Found:
    """The outcome of one ``find``."""

    found: bool
    seconds: float
    hops: int


def walk(ctx: Ctx, origin: int, target: int, done: Callable[[Lookup[int]], None],
         value_at: Callable[[int], bytes | None] | None = None, owner: int | None = None,
         first: Sequence[int] = (), seeds: Sequence[int] | None = None) -> None:  # fmt: skip
    """Drive a :class:`Lookup` from ``origin`` over the network; ``done`` once it finished.

    With ``value_at`` it is a GET_VALUE walk: a peer holding a value for
    ``owner``'s key returns it with its closest peers, the walk stops at the
    first value the real validator accepts (later replies still arrive and
    are counted, as in a real network). ``first``: peers asked at once
    before alpha applies (``Lookup.ask_first``, Dht.get_address's first round);
    ``seeds``: the candidates to start from (default: origin's k closest).
    """
    positions = ctx.table.positions
    start = ctx.table.closest(origin, target) if seeds is None else seeds
    lookup: Lookup[int] = Lookup(target, positions.__getitem__, start, exclude=origin)
    finished = False

    def serve(peer: int) -> tuple[list[int], bytes | None]:
        value = value_at(peer) if value_at is not None else None
        return ctx.table.closest(peer, target), value

    def reply(peer: int, answer: tuple[list[int], bytes | None]) -> None:
        closer, value = answer
        valid = value is not None and owner is not None and ctx.world.open(owner, value)
        lookup.on_reply(peer, closer, found=valid)
        pump()

    def send(peers: list[int]) -> None:
        for peer in peers:
            ctx.net.rpc(origin, peer, lambda p=peer: serve(p), lambda ans, p=peer: reply(p, ans))

    def pump() -> None:
        nonlocal finished
        if finished:
            return
        if lookup.finished:
            finished = True
            done(lookup)
            return
        send(lookup.next_requests())

    send(lookup.ask_first(first))
    pump()


def gather(ctx: Ctx, origin: int, peers: list[int], serve: Callable[[int], object],
           done: Callable[[list[object]], None]) -> None:  # fmt: skip
    """One RPC to each of ``peers`` at once; ``done`` with every answer once all came back (a nursery)."""
    answers: list[object] = []
    if not peers:
        done(answers)
        return

    def reply(answer: object) -> None:
        answers.append(answer)
        if len(answers) == len(peers):
            done(answers)

    for peer in peers:
        ctx.net.rpc(origin, peer, lambda p=peer: serve(p), reply)


def put_record(ctx: Ctx, node: int, records: dict[int, set[int]]) -> None:
    """PUT_VALUE of ``node``'s own record: walk to its key, then each closest peer checks and stores it."""
    member = ctx.world.members[node]

    def put(lookup: Lookup[int]) -> None:
        def store(peer: int) -> None:
            if ctx.world.open(node, member.sealed):
                records.setdefault(peer, set()).add(node)

        gather(ctx, node, lookup.result(), store, lambda _: None)

    walk(ctx, node, member.record_position, put)


class Strategy:
    """A discovery design, as the simulator drives it."""

    name = ""

    def publish(self, ctx: Ctx, node: int) -> None:
        raise NotImplementedError

    def round(self, ctx: Ctx, node: int) -> None:
        """One discovery round of an idle node, republishing aside (the report adds its share)."""
        raise NotImplementedError

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        raise NotImplementedError

    def coverage(self, ctx: Ctx) -> float:
        """The fraction of members whose addresses a node can find by this strategy alone."""
        raise NotImplementedError


@dataclass
class MembersKey(Strategy):
    """The current design: provider key "members" (capped at 20) + every provider's record fetched."""

    name = "members-key"
    providers: dict[int, dict[int, None]] = field(default_factory=dict)  # storer -> providers, arrival order
    records: dict[int, set[int]] = field(default_factory=dict)  # storer -> members whose record it holds

    def publish(self, ctx: Ctx, node: int) -> None:
        put_record(ctx, node, self.records)

        def provide(lookup: Lookup[int]) -> None:
            def add(peer: int) -> None:
                stored = self.providers.setdefault(peer, {})
                if len(stored) < PROVIDER_CAP or node in stored:
                    stored[node] = None

            gather(ctx, node, lookup.result(), add, lambda _: None)

        walk(ctx, node, provider_position(ctx.world), provide)

    def _find_providers(self, ctx: Ctx, node: int, fresh_walk: bool, done: Callable[[list[int], int], None]) -> None:
        key = provider_position(ctx.world)

        def ask(closest: list[int], hops: int) -> None:
            peers = [p for p in closest if p != node]
            gather(ctx, node, peers, lambda p: list(self.providers.get(p, {})),
                   lambda answers: done(_union(answers), hops + 1))  # fmt: skip

        if fresh_walk:
            walk(ctx, node, key, lambda lookup: ask(lookup.result(), lookup.hops))
        else:  # the walk of up to 30 s ago: the same peers in a network without churn
            ask(ctx.table.true_closest(key, K), 0)

    def round(self, ctx: Ctx, node: int) -> None:
        def fetch(providers: list[int], hops: int) -> None:
            due = [p for p in providers if p != node and ctx.rng.random() < INTERVAL / (TTL / 2)]
            gather(ctx, node, due, lambda p: ctx.world.members[p].sealed, lambda _: None)
            for p in due:
                ctx.world.open(p, ctx.world.members[p].sealed)

        self._find_providers(ctx, node, ctx.rng.random() < INTERVAL / CLOSEST_REUSE, fetch)

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        """A node's first round: walk, providers; ``dst``'s record from its owner if ``dst`` is among them."""
        start = ctx.sim.now

        def listed(providers: list[int], hops: int) -> None:
            if dst not in providers:
                done(Found(False, ctx.sim.now - start, hops))
                return

            def got(sealed: object) -> None:
                ok = isinstance(sealed, bytes) and ctx.world.open(dst, sealed)
                done(Found(ok, ctx.sim.now - start, hops + 1))

            ctx.net.rpc(src, dst, lambda: ctx.world.members[dst].sealed, got)

        self._find_providers(ctx, src, True, listed)

    def coverage(self, ctx: Ctx) -> float:
        closest = ctx.table.true_closest(provider_position(ctx.world), K)
        listed = set(_union([list(self.providers.get(p, {})) for p in closest]))
        return len(listed) / len(ctx.world.members)


@dataclass
class PerKey(Strategy):
    """Per-member records looked up by key when needed; an idle node only republishes its own."""

    name = "per-key"
    records: dict[int, set[int]] = field(default_factory=dict)  # storer -> members whose record it holds

    def publish(self, ctx: Ctx, node: int) -> None:
        put_record(ctx, node, self.records)

    def round(self, ctx: Ctx, node: int) -> None:
        """Nothing: an idle node only republishes its record (counted from ``publish``)."""

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        start = ctx.sim.now
        member = ctx.world.members[dst]

        def value_at(peer: int) -> bytes | None:
            return member.sealed if dst in self.records.get(peer, ()) or peer == dst else None

        def finished(lookup: Lookup[int]) -> None:
            done(Found(lookup.found_at is not None, ctx.sim.now - start, lookup.hops))

        walk(ctx, src, member.record_position, finished, value_at=value_at, owner=dst)

    def coverage(self, ctx: Ctx) -> float:
        stored = set().union(*self.records.values()) if self.records else set()
        return len(stored) / len(ctx.world.members)


from p2pvpn.discovery.address import address_key  # noqa: E402  the real key function (docs/protocol.md §18.2)
from p2pvpn.discovery.rules import ADDRESS_CONNECTED_ASK, ADDRESS_FIRST_ASK, first_asks  # noqa: E402

BOOTSTRAPS = 3  # the members every node stays connected to (bench/scale.py's --bootstraps default)


@dataclass
class AddressKey(PerKey):
    """Per-member records, also stored under each overlay address; found by the packet's destination address."""

    name = "addr-key"
    by_key: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # storer -> (member, key position)

    def _positions(self, ctx: Ctx, node: int) -> list[int]:
        member = ctx.world.members[node]
        return [kad_key(address_key(ctx.world.network, a).encode()) for a in member.addresses]

    def publish(self, ctx: Ctx, node: int) -> None:
        super().publish(ctx, node)
        member = ctx.world.members[node]
        for position in self._positions(ctx, node):

            def put(lookup: Lookup[int], position: int = position) -> None:
                def store(peer: int) -> None:
                    if ctx.world.open(node, member.sealed):
                        self.by_key.setdefault(peer, set()).add((node, position))

                gather(ctx, node, lookup.result(), store, lambda _: None)

            walk(ctx, node, position, put)

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        """The first packet names dst's overlay IPv4: look up that address key, as Dht.get_address does.

        One iterative GET_VALUE walk (``walk`` over the real
        ``discovery.walk.Lookup``) whose first round asks, at once, the
        ADDRESS_FIRST_ASK peers of src's table closest to the key and up to
        ADDRESS_CONNECTED_ASK connected peers (``rules.first_asks``, the real
        choice; the model's connections are src's table and the BOOTSTRAPS
        first members, so the round asks the 8 closest peers src knows);
        every answer carries the peer's closest peers, and the walk goes on
        from them (alpha in flight) until the first valid record.
        """
        start = ctx.sim.now
        member = ctx.world.members[dst]

        position = self._positions(ctx, dst)[0]

        def value_at(peer: int) -> bytes | None:
            return member.sealed if (dst, position) in self.by_key.get(peer, ()) or peer == dst else None

        def finished(lookup: Lookup[int]) -> None:
            done(Found(lookup.found_at is not None, ctx.sim.now - start, lookup.hops))

        positions = ctx.table.positions
        # A node holds connections to the peers of its table (it met them all) and to the bootstrap members.
        connected = ctx.table.tables[src] + [p for p in range(min(BOOTSTRAPS, len(positions))) if p != src]
        asks = first_asks(ctx.table.closest(src, position, ADDRESS_FIRST_ASK), connected,
                          lambda p: positions[p] ^ position, ADDRESS_CONNECTED_ASK)
        walk(ctx, src, position, finished, value_at=value_at, owner=dst, first=asks)

    def coverage(self, ctx: Ctx) -> float:
        stored = {member for held in self.by_key.values() for member, _ in held}
        return len(stored) / len(ctx.world.members)


def _union(answers: list[object]) -> list[int]:
    seen: dict[int, None] = {}
    for answer in answers:
        for p in answer:  # type: ignore[attr-defined]
            seen.setdefault(p, None)
    return list(seen)


@dataclass
class PerKeyLibp2p(PerKey):
    """Per-key records read as py-libp2p 0.8.1's ``get_value(key, quorum=1)`` does: the cost the walk replaced.

    First a FIND_NODE walk to convergence (no value can stop it), then
    GET_VALUE to the k closest it found, closest first, alpha in flight,
    until the first valid value (a second walk seeded with them). Dht's own
    walk (per-key, addr-key) sends GET_VALUE from the start and stops there.
    """

    name = "per-key-libp2p"

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        start = ctx.sim.now
        member = ctx.world.members[dst]
        target = member.record_position

        def value_at(peer: int) -> bytes | None:
            return member.sealed if dst in self.records.get(peer, ()) or peer == dst else None

        def converged(nodes: Lookup[int]) -> None:
            def finished(values: Lookup[int]) -> None:
                done(Found(values.found_at is not None, ctx.sim.now - start, nodes.hops + values.hops))

            walk(ctx, src, target, finished, value_at=value_at, owner=dst, seeds=nodes.result())

        walk(ctx, src, target, converged)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (MembersKey, PerKey, AddressKey, PerKeyLibp2p)}
