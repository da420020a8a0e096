"""Discovery strategies the simulator can run: how a node announces itself and finds a member's addresses.

A strategy is pluggable (:class:`Strategy`): ``publish`` (a node
announces itself), ``round`` (what an idle node does every discovery
interval), ``find`` (a node needs member ``dst``'s addresses, e.g. its
first packet for ``dst`` arrived at the TUN) and ``coverage`` (which
members any node can find at all). The other discovery designs (roster
pages, records merged along tunnels, on-demand tunnels) plug in here as
further classes, driving their own sans-IO modules.

* :class:`MembersKey`, **the design before on-demand tunnels** (the
  node's non-on-demand mode still runs it): every member provides one key,
  "members", and stores its record under its own key; every round a node
  asks the k peers closest to "members" for providers (their closest peers
  re-walked at most every 30 s), and fetches from its owner each provider's
  record whose copy is in the second half of its life. py-libp2p's
  provider store keeps the first 20 providers of a key and ignores later
  ones (``ProviderStore.add_provider``): that cap is modeled exactly.
* :class:`AddressKey`, **what the node runs now** (on demand,
  docs/protocol.md §18; ``Discovery._announce_loop``, ``Dht.publish``,
  ``Dht.get_address``): a publish stores the record under its two
  address keys (``address.keys_of``: IPv4, IPv6) and its own key, one
  after the other (on demand no "members" provide since 2026-12-01;
  :class:`AddressKeyMembers` is the node before that); a first packet for an
  overlay address looks up that key with the iterative GET_VALUE walk
  (``discovery.walk.Lookup``) whose first round ``rules.first_asks``
  chooses; an idle node's round does nothing (no tunnels in use).
* :class:`PerKey`, **a per-key lookup design**: every member stores its
  record under its own key at the k closest peers (republished every
  TTL/2); an idle node does nothing else. A node that needs a member's
  addresses (it knows the member's peer ID from its certificate) runs one
  iterative GET_VALUE lookup for that member's key and stops at the first
  valid record.

Stores (``put_value``, ``provide``) go through py-libp2p's own walk
(:func:`p2pvpn.sim.walks.store`); lookups through the project's walk
(:func:`p2pvpn.sim.walks.walk`). All share the routing tables and the
real records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from p2pvpn.discovery.address import address_key, keys_of
from p2pvpn.discovery.dht import CLOSEST_REUSE
from p2pvpn.discovery.rules import ADDRESS_CONNECTED_ASK, ADDRESS_FIRST_ASK, first_asks, provided_roles
from p2pvpn.sim.kademlia import K, Lookup, kad_key
from p2pvpn.sim.walks import Ctx, Found, gather, libp2p_walk, store, walk
from p2pvpn.sim.world import TTL, provider_position

__all__ = ["STRATEGIES", "AddressKey", "AddressKeyMembers", "Ctx", "Found", "MembersKey", "PerKey", "PerKeyLibp2p", "Strategy"]

INTERVAL = 10.0  # seconds between discovery rounds (config.discovery_interval)
PROVIDER_CAP = 20  # providers py-libp2p keeps per key
BOOTSTRAPS = 3  # the members every node stays connected to (bench/scale.py's --bootstraps default)


def put_record(ctx: Ctx, node: int, records: dict[int, set[int]], done: Callable[[], None] = lambda: None) -> None:
    """PUT_VALUE of ``node``'s own record under its own key: py-libp2p's walk, then each closest peer keeps it."""
    member = ctx.world.members[node]

    def keep(peer: int) -> None:
        if ctx.world.open(node, member.sealed):
            records.setdefault(peer, set()).add(node)

    store(ctx, node, member.record_position, keep, done)


def provide_members(ctx: Ctx, node: int, providers: dict[int, dict[int, None]],
                    done: Callable[[], None] = lambda: None) -> None:  # fmt: skip
    """ADD_PROVIDER of "members": each closest peer keeps the first PROVIDER_CAP providers (py-libp2p's store)."""

    def add(peer: int) -> None:
        stored = providers.setdefault(peer, {})
        if len(stored) < PROVIDER_CAP or node in stored:
            stored[node] = None

    store(ctx, node, provider_position(ctx.world), add, done)


class Strategy:
    """A discovery design, as the simulator drives it."""

    name = ""

    def publish(self, ctx: Ctx, node: int, done: Callable[[], None] = lambda: None) -> None:
        """Store ``node``'s records (``done`` once every store answered or timed out)."""
        raise NotImplementedError

    def round(self, ctx: Ctx, node: int) -> None:
        """One discovery round of an idle node, republishing aside."""
        raise NotImplementedError

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        raise NotImplementedError

    def coverage(self, ctx: Ctx) -> float:
        """The fraction of members whose addresses a node can find by this strategy alone."""
        raise NotImplementedError


@dataclass
class MembersKey(Strategy):
    """The design before on-demand tunnels: provider key "members" (capped at 20) + every provider's record fetched."""

    name = "members-key"
    providers: dict[int, dict[int, None]] = field(default_factory=dict)  # storer -> providers, arrival order
    records: dict[int, set[int]] = field(default_factory=dict)  # storer -> members whose record it holds

    def publish(self, ctx: Ctx, node: int, done: Callable[[], None] = lambda: None) -> None:
        put_record(ctx, node, self.records, lambda: provide_members(ctx, node, self.providers, done))

    def _find_providers(self, ctx: Ctx, node: int, fresh_walk: bool, done: Callable[[list[int], int], None]) -> None:
        key = provider_position(ctx.world)

        def ask(closest: list[int], requests: int) -> None:
            peers = [p for p in closest if p != node]
            gather(ctx, node, peers, lambda p: list(self.providers.get(p, {})),
                   lambda answers: done(_union(answers), requests + len(peers)))  # fmt: skip

        if fresh_walk:
            libp2p_walk(ctx, node, key, ask, tag="round")
        else:  # the walk of up to 30 s ago: the same peers in a network without churn
            ask(ctx.table.true_closest(key, K), 0)

    def round(self, ctx: Ctx, node: int) -> None:
        def fetch(providers: list[int], _requests: int) -> None:
            due = [p for p in providers if p != node and ctx.rng.random() < INTERVAL / (TTL / 2)]
            gather(ctx, node, due, lambda p: ctx.world.members[p].sealed, lambda _: None, tag="round")
            for p in due:
                ctx.world.open(p, ctx.world.members[p].sealed)

        self._find_providers(ctx, node, ctx.rng.random() < INTERVAL / CLOSEST_REUSE, fetch)

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        """A node's first round: walk, providers; ``dst``'s record from its owner if ``dst`` is among them."""
        start = ctx.sim.now

        def listed(providers: list[int], requests: int) -> None:
            if dst not in providers:
                done(Found(False, ctx.sim.now - start, 2, requests))
                return

            def got(sealed: object) -> None:
                ok = isinstance(sealed, bytes) and ctx.world.open(dst, sealed)
                done(Found(ok, ctx.sim.now - start, 3, requests + 1))

            ctx.net.rpc(src, dst, lambda: ctx.world.members[dst].sealed, got, tag="lookup")

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

    def publish(self, ctx: Ctx, node: int, done: Callable[[], None] = lambda: None) -> None:
        put_record(ctx, node, self.records, done)

    def round(self, ctx: Ctx, node: int) -> None:
        """Nothing: an idle node only republishes its record."""

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        start = ctx.sim.now
        member = ctx.world.members[dst]

        def value_at(peer: int) -> bytes | None:
            return member.sealed if dst in self.records.get(peer, ()) or peer == dst else None

        def finished(lookup: Lookup[int]) -> None:
            done(Found(lookup.found_at is not None, ctx.sim.now - start, lookup.hops, lookup.requests))

        walk(ctx, src, member.record_position, finished, value_at=value_at, owner=dst)

    def coverage(self, ctx: Ctx) -> float:
        stored = set().union(*self.records.values()) if self.records else set()
        return len(stored) / len(ctx.world.members)


@dataclass
class AddressKey(PerKey):
    """What the node runs now: records under the address keys and the own key, found by a packet's destination.

    ``publish`` is ``Dht.publish`` as ``Discovery._announce_loop`` calls it
    for an on-demand member: a store under each key of
    ``address.keys_of(record)``, then under the record key, one after the
    other, then a provide of each key ``rules.provided_roles`` gives (none:
    on demand a member provides no "members", and the model's members offer
    no relay or exit). ``find`` is ``Dht.get_address``.
    """

    name = "addr-key"
    by_key: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # storer -> (member, key position)
    providers: dict[int, dict[int, None]] = field(default_factory=dict)  # storer -> "members" providers

    def roles(self) -> list[str]:
        """The provider keys a member's publish provides: the node's rule, on demand."""
        return provided_roles(member=True, on_demand=True)

    def _positions(self, ctx: Ctx, node: int) -> list[int]:
        member = ctx.world.members[node]
        return [kad_key(key.encode()) for key in keys_of(ctx.world.network, member.record)]

    def publish(self, ctx: Ctx, node: int, done: Callable[[], None] = lambda: None) -> None:
        member = ctx.world.members[node]
        steps: list[Callable[[Callable[[], None]], None]] = []
        for position in self._positions(ctx, node):

            def put_address(then: Callable[[], None], position: int = position) -> None:
                def keep(peer: int) -> None:
                    if ctx.world.open(node, member.sealed):
                        self.by_key.setdefault(peer, set()).add((node, position))

                store(ctx, node, position, keep, then)

            steps.append(put_address)
        steps.append(lambda then: put_record(ctx, node, self.records, then))
        if "members" in self.roles():
            steps.append(lambda then: provide_members(ctx, node, self.providers, then))

        def step(i: int) -> None:
            if i == len(steps):
                done()
            else:
                steps[i](lambda: step(i + 1))

        step(0)

    def holds(self, node: int, dst: int, position: int) -> bool:
        return (dst, position) in self.by_key.get(node, ())

    def find(self, ctx: Ctx, src: int, dst: int, done: Callable[[Found], None]) -> None:
        """The first packet names dst's overlay IPv4: ``Dht.get_address`` for that address key.

        A valid local copy answers at once (no message). Else one iterative
        GET_VALUE walk (:func:`p2pvpn.sim.walks.walk` over the real
        ``discovery.walk.Lookup``) whose first round asks, at once, the
        ADDRESS_FIRST_ASK peers of src's table closest to the key and up to
        ADDRESS_CONNECTED_ASK connected peers, the closest to the key first
        (the real ``rules.first_asks``; the model's connections are src's
        table and the BOOTSTRAPS first members, those not gone); every
        answer carries the peer's closest peers, and the walk goes on from
        them (alpha in flight) until the first valid record.
        """
        start = ctx.sim.now
        member = ctx.world.members[dst]
        key = address_key(ctx.world.network, member.record.ipv4)
        position = kad_key(key.encode())
        if self.holds(src, dst, position):
            done(Found(True, 0.0, 0, 0))
            return

        def value_at(peer: int) -> bytes | None:  # put_value stores locally first: the owner holds its own
            return member.sealed if peer == dst or self.holds(peer, dst, position) else None

        def finished(lookup: Lookup[int]) -> None:
            if lookup.found_at is not None:  # kept in the value store: the next lookup answers locally, others ask us
                self.by_key.setdefault(src, set()).add((dst, position))
            done(Found(lookup.found_at is not None, ctx.sim.now - start, lookup.hops, lookup.requests))

        positions = ctx.table.positions
        # A node holds connections to the peers of its table (it met them all) and to the bootstrap members;
        # a gone peer's connection has closed.
        connected = [p for p in ctx.table.tables[src] + list(range(min(BOOTSTRAPS, len(positions))))
                     if p != src and p not in ctx.net.down]  # fmt: skip
        table_closest = ctx.table.closest(src, position, ADDRESS_FIRST_ASK)
        asks = first_asks(table_closest, connected, lambda p: positions[p] ^ position, ADDRESS_CONNECTED_ASK)
        walk(ctx, src, position, finished, value_at=value_at, owner=dst, first=asks)

    def coverage(self, ctx: Ctx) -> float:
        stored = {member for held in self.by_key.values() for member, _ in held}
        return len(stored) / len(ctx.world.members)


@dataclass
class AddressKeyMembers(AddressKey):
    """The node before 2026-12-01, for comparison: ``AddressKey`` whose members still provide "members".

    Every member's publish ended with a provide of the one "members" key,
    so the 20 peers closest to it served every member's ADD_PROVIDER (and
    the end of every walk toward it): their load grew with the network,
    while nothing on demand reads the key.
    """

    name = "addr-key-members"

    def roles(self) -> list[str]:
        return ["members"]


def _union(answers: list[object]) -> list[int]:
    seen: dict[int, None] = {}
    for answer in answers:
        for p in answer or ():  # type: ignore[attr-defined]
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
                done(Found(values.found_at is not None, ctx.sim.now - start, nodes.hops + values.hops,
                           nodes.requests + values.requests))  # fmt: skip

            walk(ctx, src, target, finished, value_at=value_at, owner=dst, seeds=nodes.result())

        walk(ctx, src, target, converged)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (MembersKey, PerKey, AddressKey, AddressKeyMembers,
                                                                PerKeyLibp2p)}
