"""Run the discovery strategies at several network sizes; the numbers, a summary, and charts.

Per size N and strategy (:mod:`p2pvpn.sim.strategies`), on one simulated
world (:mod:`p2pvpn.sim.world`) and a fresh clock and network each:

1. **publish**: every node publishes once, at a random moment of the
   first 5 s; messages per node.
2. **finds**: ``lookups`` random ordered pairs, one at a time on the quiet
   network: virtual seconds from "src needs dst's addresses" to a valid
   record in hand (median, p90, p99), requests (RPCs) src sent, hops, and
   whether dst was found at all.
3. **window**: ``window`` s of a network up for a while
   (:func:`p2pvpn.sim.timeline.run_window`, steady): republishes on the
   real PublishSchedule, py-libp2p's routing-table refresh, rounds, and
   ``lookup_rate`` lookups per node per minute; messages per node per
   minute, idle (publish + refresh + rounds) and with the lookups, mean and
   max (the max is the busiest node), and the latency of those lookups
   (they overlap, so nodes queue).
4. **churn**: ``churn`` of the nodes gone at once (no goodbye, still in
   every routing table, no republish since), then ``lookups`` finds
   between live nodes: success, latency, RPCs, timeouts.
5. **coverage**: the fraction of members any node can find this way.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from p2pvpn.discovery.dht import ADDRESS_FIRST_WAIT, WALK_RPC_TIMEOUT, WALK_TIMEOUT
from p2pvpn.discovery.rules import ADDRESS_CONNECTED_ASK, ADDRESS_FIRST_ASK, EARLY_REPUBLISH
from p2pvpn.sim.engine import Net, Sim
from p2pvpn.sim.kademlia import ALPHA, K, RoutingTable
from p2pvpn.sim.strategies import INTERVAL, PROVIDER_CAP, STRATEGIES, Ctx, Found, Strategy
from p2pvpn.sim.timeline import ROUTING_TABLE_REFRESH_INTERVAL, run_window
from p2pvpn.sim.walks import LIBP2P_ALPHA
from p2pvpn.sim.world import TTL, build

PUBLISH_SPREAD = 5.0  # seconds over which the nodes' first publishes are spread
WINDOW = 600.0  # seconds of the steady window (one py-libp2p refresh period, four republish periods)
LOOKUP_RATE = 1.0  # lookups per node per minute in the window
CHURN = 0.10  # the fraction of nodes gone in the churn case

REAL = [
    "signed node records: p2pvpn.discovery.record.make_record / seal, judged by RecordValidator (owned network)",
    "certificates: p2pvpn.membership.authority.admit (names, addresses), cert.verify inside the validator",
    "DHT keys: record.record_key, address.keys_of / address_key, provider_key; positions = SHA-256 as py-libp2p",
    "the address lookup: p2pvpn.discovery.walk.Lookup (sans-IO, k=20, alpha=3, <= 60 requests) driven as "
    "Dht._walk drives it (ask_first, release_first after dht.ADDRESS_FIRST_WAIT, on_failure after "
    "dht.WALK_RPC_TIMEOUT, the walk ends after dht.WALK_TIMEOUT), a local copy answering first (Dht.get_address)",
    "its first round: p2pvpn.discovery.rules.first_asks (3 closest of the table + up to 5 connected servers)",
    "republishing: p2pvpn.discovery.rules.PublishSchedule per node (period TTL/2, early republishes, grown)",
    "the publish: Dht.publish's order (address keys, record key, one after the other, then provide 'members')",
]
MODELED = [
    "routing tables: converged k-buckets, up to k random peers per bucket; they do not grow or learn of churn",
    "latency: per-node access delay 5-40 ms to a common core; a message a->b takes both; no loss",
    "CPU: 3 ms per served request, one at a time per node (a queue at hot nodes); the client side is free",
    "py-libp2p's put_value/provide and routing-table refresh: a copy of find_closest_peers_network's rule "
    "(lock-step rounds of 10, stop when the 20 closest do not change), then one store per closest peer",
    "py-libp2p's provider store: the first 20 providers per key are kept, later ones ignored",
    "connections: a node is connected to its table's peers and 3 bootstrap members; no dial, Noise or "
    "identify cost, no NAT (every node a DHT server), no relays",
    "churn: a gone node never answers (its requests time out); its connections are closed, it stays in tables",
]


def summarize(values: Sequence[float], digits: int = 4) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], digits)

    return {"mean": round(statistics.fmean(ordered), digits), "median": round(statistics.median(ordered), digits),
            "p90": pct(0.9), "p99": pct(0.99), "max": round(ordered[-1], digits), "n": len(ordered)}  # fmt: skip


def finds(found: Sequence[Found]) -> dict[str, Any]:
    """Latency, RPCs and hops of the finds that found, and how many did."""
    ok = [f for f in found if f.found]
    return {"sampled": len(found), "found": len(ok), "success": round(len(ok) / len(found), 4) if found else None,
            "seconds": summarize([f.seconds for f in ok]), "requests": summarize([f.requests for f in found], 2),
            "hops": summarize([f.hops for f in ok], 2), "local": sum(1 for f in ok if f.requests == 0)}  # fmt: skip


def sequential(ctx: Ctx, strategy: Strategy, pairs: Sequence[tuple[int, int]]) -> tuple[list[Found], list[int]]:
    """One find at a time on a quiet network; the results and each find's messages."""
    found: list[Found] = []
    messages: list[int] = []
    for src, dst in pairs:
        before = sum(ctx.net.sent)
        strategy.find(ctx, src, dst, found.append)
        ctx.sim.run()
        messages.append(sum(ctx.net.sent) - before)  # requests and replies, each one message
    return found, messages


def run_strategy(strategy: Strategy, world: Any, table: RoutingTable, lookups: int, seed: int,
                 window: float = WINDOW, lookup_rate: float = LOOKUP_RATE, churn: float = CHURN) -> dict[str, Any]:
    n = len(world.members)
    rng = random.Random(f"{seed}/{n}/{strategy.name}")
    sim = Sim()
    ctx = Ctx(world, table, sim, Net(sim, n, rng), rng)
    validations_before = world.validations
    for node in range(n):
        sim.at(rng.uniform(0, PUBLISH_SPREAD), lambda node=node: strategy.publish(ctx, node))
    sim.run()
    publish = ctx.net.messages()
    ctx.net.reset_counts()
    quiet, messages = sequential(ctx, strategy, [tuple(rng.sample(range(n), 2)) for _ in range(lookups)])
    out: dict[str, Any] = {
        "nodes": n,
        "publish_messages_per_node": summarize(publish, 1),
        "find": {**finds(quiet), "messages": summarize(messages, 1)},
    }
    if window > 0:
        w = run_window(ctx, strategy, window, lookups_per_minute=lookup_rate)
        out["window"] = {"seconds": window, "lookup_rate_per_min": lookup_rate,
                         "idle_per_min": summarize(w["idle"], 1), "total_per_min": summarize(w["total"], 1),
                         "per_tag_per_min": {t: summarize(v, 1) for t, v in w["per_tag"].items()},
                         "publishes_per_node": summarize(w["publishes"], 2), "grown": w["grown"],
                         "finds": finds(w["found"])}  # fmt: skip
    if churn > 0 and n >= 10:
        gone = set(rng.sample(range(n), max(1, round(churn * n))))
        ctx.net.down = gone
        live = [i for i in range(n) if i not in gone]
        timeouts = ctx.net.timeouts
        found, messages = sequential(ctx, strategy, [tuple(rng.sample(live, 2)) for _ in range(lookups)])
        out["churn"] = {"gone": len(gone), **finds(found), "messages": summarize(messages, 1),
                        "timeouts": ctx.net.timeouts - timeouts}  # fmt: skip
        ctx.net.down = set()
    out["coverage"] = round(strategy.coverage(ctx), 4)
    out["validations"] = world.validations - validations_before
    out["events"] = sim.events
    return out


def run(sizes: Sequence[int], strategies: Sequence[str], lookups: int, seed: int, window: float = WINDOW,
        lookup_rate: float = LOOKUP_RATE, churn: float = CHURN) -> dict[str, Any]:
    """The whole sweep; ValueError for an unknown strategy."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in strategies}
    timing: dict[str, float] = {}
    for n in sizes:
        t = time.monotonic()
        world = build(n, seed)
        table = RoutingTable(world.positions, random.Random(f"{seed}/{n}/table"))
        for name in strategies:
            results[name].append(run_strategy(STRATEGIES[name](), world, table, lookups, seed, window,
                                              lookup_rate, churn))  # fmt: skip
        timing[str(n)] = round(time.monotonic() - t, 1)
    return {
        "sizes": list(sizes),
        "seed": seed,
        "lookups": lookups,
        "parameters": {"k": K, "alpha": ALPHA, "libp2p_alpha": LIBP2P_ALPHA, "interval_s": INTERVAL, "ttl_s": TTL,
                       "early_republish_s": list(EARLY_REPUBLISH), "refresh_interval_s": ROUTING_TABLE_REFRESH_INTERVAL,
                       "first_ask": [ADDRESS_FIRST_ASK, ADDRESS_CONNECTED_ASK], "first_wait_s": ADDRESS_FIRST_WAIT,
                       "walk_rpc_timeout_s": WALK_RPC_TIMEOUT, "walk_timeout_s": WALK_TIMEOUT,
                       "provider_cap": PROVIDER_CAP, "publish_spread_s": PUBLISH_SPREAD, "window_s": window,
                       "lookup_rate_per_min": lookup_rate, "churn": churn},  # fmt: skip
        "real": REAL,
        "modeled": MODELED,
        "results": results,
        "wall_s_per_size": timing,
    }


def summary(rep: dict[str, Any]) -> str:
    """One line per strategy and size."""
    lines = [f"simulation, seed {rep['seed']}, {rep['lookups']} finds per size (virtual time; see 'modeled')",
             f"{'strategy':<12} {'N':>5} {'found':>9} {'find ms med/p90/p99':>20} {'RPCs':>5} "
             f"{'msgs/node/min idle mean/max':>28} {'+lookups mean/max':>18} {'churn found':>11} "
             f"{'churn ms med/p90/p99':>21}"]  # fmt: skip

    def ms(sec: dict[str, float] | None) -> str:
        return f"{sec['median'] * 1000:.0f}/{sec['p90'] * 1000:.0f}/{sec['p99'] * 1000:.0f}" if sec else "-"

    for name, rows in rep["results"].items():
        for r in rows:
            f = r["find"]
            w = r.get("window")
            idle = f"{w['idle_per_min']['mean']}/{w['idle_per_min']['max']}" if w else "-"
            busy = f"{w['total_per_min']['mean']}/{w['total_per_min']['max']}" if w else "-"
            c = r.get("churn")
            churn = f"{c['found']}/{c['sampled']}" if c else "-"
            lines.append(f"{name:<12} {r['nodes']:>5} {f['found']:>4}/{f['sampled']:<4} {ms(f['seconds']):>20} "
                         f"{f['requests']['mean'] if f['requests'] else '-':>5} {idle:>28} {busy:>18} {churn:>11} "
                         f"{ms(c['seconds']) if c else '-':>21}")  # fmt: skip
    return "\n".join(lines)
