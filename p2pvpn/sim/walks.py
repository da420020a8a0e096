"""The DHT walks a simulated node makes, carried as messages over :class:`p2pvpn.sim.engine.Net`.

Two walks, because the node runs two:

* :func:`walk` drives the project's own sans-IO state machine,
  :class:`p2pvpn.discovery.walk.Lookup`, exactly as ``Dht._walk`` drives
  it for an address lookup (``Dht.get_address``): a first round of chosen
  peers at once (``Lookup.ask_first``), released after the real
  ``dht.ADDRESS_FIRST_WAIT`` (``Lookup.release_first``), a GET_VALUE that
  gets no answer within ``dht.WALK_RPC_TIMEOUT`` is a failed peer
  (``Lookup.on_failure``), the whole walk ends after ``dht.WALK_TIMEOUT``.
  Without ``value_at`` it is a FIND_NODE walk to convergence (the baseline
  strategies use it).
* :func:`libp2p_walk` is py-libp2p 0.8.1's ``find_closest_peers_network``
  (``put_value`` and ``provide`` call it before storing, the 10-minute
  routing-table refresh calls it per bucket): lock-step rounds of up to
  ALPHA = 10 FIND_NODE requests, merged into the 20 closest, until a round
  changes nothing. That code does I/O inside its loop, so the simulator
  carries a copy of its rule (this module's only copy of a rule; the
  constants are imported from py-libp2p).

:func:`store` is ``put_value``/``provide``: that walk, then one request
to each of the closest peers it returned (a down one costs its timeout).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from libp2p.kad_dht.common import ALPHA as LIBP2P_ALPHA
from libp2p.kad_dht.common import QUERY_TIMEOUT as LIBP2P_QUERY_TIMEOUT
from libp2p.kad_dht.peer_routing import MAX_PEER_LOOKUP_ROUNDS

from p2pvpn.discovery.dht import ADDRESS_FIRST_WAIT, WALK_RPC_TIMEOUT, WALK_TIMEOUT
from p2pvpn.sim.engine import Net, Sim
from p2pvpn.sim.kademlia import K, Lookup, RoutingTable
from p2pvpn.sim.world import World

LIBP2P_WALK_SECONDS = 30.0  # find_closest_peers_network stops starting rounds after this


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
    """The outcome of one ``find``: found, virtual seconds, hops, requests (RPCs) the finder sent."""

    found: bool
    seconds: float
    hops: int
    requests: int = 0


def walk(ctx: Ctx, origin: int, target: int, done: Callable[[Lookup[int]], None],
         value_at: Callable[[int], bytes | None] | None = None, owner: int | None = None,
         first: Sequence[int] = (), seeds: Sequence[int] | None = None, tag: str = "lookup") -> None:  # fmt: skip
    """Drive a :class:`Lookup` from ``origin`` over the network as ``Dht._walk`` does; ``done`` once it finished.

    With ``value_at`` it is a GET_VALUE walk: a peer holding a value for
    ``owner``'s key returns it with its closest peers, the walk stops at the
    first value the real validator accepts (requests still in flight are
    answered and counted, as in a real network, and ignored). ``first``:
    peers asked at once before alpha applies; ``seeds``: the candidates to
    start from (default: origin's k closest). ``done`` runs once, when the
    lookup finished or WALK_TIMEOUT s passed (then ``found_at`` is None).
    """
    positions = ctx.table.positions
    start = ctx.table.closest(origin, target) if seeds is None else seeds
    lookup: Lookup[int] = Lookup(target, positions.__getitem__, start, exclude=origin)
    finished = False

    def serve(peer: int) -> tuple[list[int], bytes | None]:
        value = value_at(peer) if value_at is not None else None
        return ctx.table.closest(peer, target), value

    def reply(peer: int, answer: tuple[list[int], bytes | None]) -> None:
        if finished:
            return
        closer, value = answer
        valid = value is not None and owner is not None and ctx.world.open(owner, value)
        lookup.on_reply(peer, closer, found=valid, invalid=value is not None and not valid)
        pump()

    def failed(peer: int) -> None:
        if not finished:
            lookup.on_failure(peer)
            pump()

    def send(peers: list[int]) -> None:
        for peer in peers:
            ctx.net.rpc(origin, peer, lambda p=peer: serve(p), lambda ans, p=peer: reply(p, ans), tag=tag,
                        timeout=WALK_RPC_TIMEOUT, on_timeout=lambda p=peer: failed(p))  # fmt: skip

    def finish() -> None:
        nonlocal finished
        if not finished:
            finished = True
            done(lookup)

    def pump() -> None:
        if finished:
            return
        if lookup.finished:
            finish()
            return
        send(lookup.next_requests())

    def release() -> None:
        if not finished:
            lookup.release_first()
            pump()

    asked = lookup.ask_first(first)
    send(asked)
    if asked:
        ctx.sim.at(ADDRESS_FIRST_WAIT, release)
    ctx.sim.at(WALK_TIMEOUT, finish)
    pump()


def libp2p_walk(ctx: Ctx, origin: int, target: int, done: Callable[[list[int], int], None],
                tag: str = "publish") -> None:  # fmt: skip
    """py-libp2p's ``find_closest_peers_network`` from ``origin``: ``done(closest, requests)``.

    Rounds: the (up to ALPHA = 10) closest not yet queried, all at once,
    the round ends when each answered or timed out; every peer an answer
    names goes into the candidates, which are cut to the 20 closest. Stop
    when a round brought no answer and the 20 closest hold nobody to ask,
    when the 20 closest did not change, after MAX_PEER_LOOKUP_ROUNDS rounds or 30 s. The result may
    hold peers never queried (and ``origin``).
    """
    positions = ctx.table.positions

    def by_distance(peers: Sequence[int]) -> list[int]:
        return sorted(dict.fromkeys(peers), key=lambda p: positions[p] ^ target)

    closest = by_distance(ctx.table.closest(origin, target, K))[:K]
    queried: set[int] = set()
    started = ctx.sim.now
    state = {"rounds": 0, "requests": 0}

    def next_round() -> None:
        if state["rounds"] >= MAX_PEER_LOOKUP_ROUNDS or ctx.sim.now - started > LIBP2P_WALK_SECONDS:
            done(closest, state["requests"])
            return
        state["rounds"] += 1
        batch = [p for p in closest if p not in queried and p != origin][:LIBP2P_ALPHA]
        if not batch:
            done(closest, state["requests"])
            return
        new_peers: dict[int, None] = {}  # py-libp2p's list without repeats, in arrival order
        pending = len(batch)

        def one_done(answer: list[int] | None) -> None:
            nonlocal pending
            for p in answer or ():
                new_peers.setdefault(p, None)
            pending -= 1
            if pending == 0:
                round_over(list(new_peers))

        for peer in batch:
            queried.add(peer)
            state["requests"] += 1
            ctx.net.rpc(origin, peer, lambda p=peer: ctx.table.closest(p, target, K), one_done, tag=tag,
                        timeout=LIBP2P_QUERY_TIMEOUT, on_timeout=lambda: one_done(None))  # fmt: skip

    def round_over(new_peers: list[int]) -> None:
        nonlocal closest
        if not new_peers:
            if any(p not in queried and p != origin for p in closest[:K]):
                next_round()
            else:
                done(closest, state["requests"])
            return
        old = closest
        closest = by_distance(closest + new_peers)[:K]
        if closest == old:
            done(closest, state["requests"])
            return
        # py-libp2p's BETA check ("continue" while fewer than BETA of the closest were queried) ends its
        # loop body either way: the next round runs in both cases.
        next_round()

    next_round()


def gather(ctx: Ctx, origin: int, peers: list[int], serve: Callable[[int], object],
           done: Callable[[list[object]], None], tag: str = "lookup",
           timeout: float = LIBP2P_QUERY_TIMEOUT) -> None:  # fmt: skip
    """One RPC to each of ``peers`` at once; ``done`` with every answer (None: timed out) once all are in."""
    answers: list[object] = []
    if not peers:
        done(answers)
        return

    def reply(answer: object) -> None:
        answers.append(answer)
        if len(answers) == len(peers):
            done(answers)

    for peer in peers:
        ctx.net.rpc(origin, peer, lambda p=peer: serve(p), reply, tag=tag, timeout=timeout,
                    on_timeout=lambda: reply(None))  # fmt: skip


def store(ctx: Ctx, node: int, target: int, keep: Callable[[int], None], done: Callable[[], None],
          tag: str = "publish") -> None:  # fmt: skip
    """``put_value``/``provide`` of ``node`` toward ``target``: py-libp2p's walk, then one store at each peer it returned.

    ``keep(peer)`` runs at each storing peer (it checks and keeps the
    value); ``done`` when every store answered or timed out.
    """

    def stores(closest: list[int], _requests: int) -> None:
        gather(ctx, node, [p for p in closest if p != node], lambda p: keep(p), lambda _: done(), tag=tag)

    libp2p_walk(ctx, node, target, stores, tag=tag)
