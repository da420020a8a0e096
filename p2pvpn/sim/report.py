"""Run the discovery strategies at several network sizes; the numbers, a summary, and charts.

Per size N and strategy (:mod:`p2pvpn.sim.strategies`), on one simulated
world (:mod:`p2pvpn.sim.world`) and fresh clock and network each:

1. **publish**: every node announces itself once, at a random moment of
   the first 5 s; messages per node.
2. **idle round**: every node runs one discovery round at a random moment
   of one interval (10 s); messages per node (sent + received) of the
   round plus the node's share of republishing (its publish messages
   times interval/(TTL/2): a record is republished every TTL/2), mean and
   max: the max is the node everybody asks.
3. **find**: ``lookups`` random ordered pairs, one at a time on the idle
   network: virtual seconds from "src needs dst's addresses" to a valid
   record in hand, hops, messages, and whether dst was found at all.
4. **coverage**: the fraction of members any node can find this way.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from p2pvpn.sim.engine import Net, Sim
from p2pvpn.sim.kademlia import ALPHA, K, RoutingTable
from p2pvpn.sim.strategies import CLOSEST_REUSE, INTERVAL, PROVIDER_CAP, STRATEGIES, Ctx, Found, Strategy
from p2pvpn.sim.world import TTL, build

PUBLISH_SPREAD = 5.0  # seconds over which the nodes' first announcements are spread

REAL = [
    "signed node records: p2pvpn.discovery.record.make_record / seal, judged by RecordValidator (owned network)",
    "certificates: p2pvpn.membership.authority.admit (names, addresses), cert.verify inside the validator",
    "DHT keys: record.record_key / provider_key, positions = SHA-256 as py-libp2p computes them",
    "the iterative lookup: p2pvpn.sim.kademlia.Lookup (sans-IO, k=20, alpha=3), the same state machine for every walk",
]
MODELED = [
    "routing tables: converged k-buckets, up to k random peers per bucket (no churn)",
    "latency: per-node access delay 5-40 ms to a common core; a message a->b takes both",
    "CPU: 3 ms per served request, one at a time per node (a queue at hot nodes)",
    "no loss, no timeouts, no NAT, no connection setup (Noise, identify) and no tunnel dial after the lookup",
    "py-libp2p's provider store: the first 20 providers per key are kept, later ones ignored",
    "the current design's per-round behaviour (dht.py/service.py): the provider walk reused for 30 s, a record "
    "re-fetched once per TTL/2, republish every TTL/2",
]


def summarize(values: Sequence[float], digits: int = 4) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(ordered), digits), "median": round(statistics.median(ordered), digits),
            "p90": round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)], digits), "max": round(ordered[-1], digits),
            "n": len(ordered)}  # fmt: skip


def run_strategy(strategy: Strategy, world: Any, table: RoutingTable, lookups: int, seed: int) -> dict[str, Any]:
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
    start = sim.now
    for node in range(n):
        sim.at(rng.uniform(0, INTERVAL), lambda node=node: strategy.round(ctx, node))
    sim.run()
    share = INTERVAL / (TTL / 2)
    rounds = [r + p * share for r, p in zip(ctx.net.messages(), publish)]
    round_seconds = sim.now - start
    found: list[Found] = []
    per_find: list[int] = []
    pairs = [(a, b) for a, b in (rng.sample(range(n), 2) for _ in range(lookups))]
    for src, dst in pairs:
        before = sum(ctx.net.sent)
        sim.run()  # idle: nothing pending
        strategy.find(ctx, src, dst, found.append)
        sim.run()
        per_find.append(sum(ctx.net.sent) - before)  # requests and replies, each one message
    ok = [f for f in found if f.found]
    return {
        "nodes": n,
        "publish_messages_per_node": summarize(publish, 1),
        "round_messages_per_node": summarize(rounds, 1),
        "round_virtual_s": round(round_seconds, 3),
        "find": {"sampled": len(found), "found": len(ok), "seconds": summarize([f.seconds for f in ok]),
                 "hops": summarize([f.hops for f in ok], 2), "messages": summarize(per_find, 1)},
        "coverage": round(strategy.coverage(ctx), 4),
        "validations": world.validations - validations_before,
        "events": sim.events,
    }


def run(sizes: Sequence[int], strategies: Sequence[str], lookups: int, seed: int) -> dict[str, Any]:
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
            results[name].append(run_strategy(STRATEGIES[name](), world, table, lookups, seed))
        timing[str(n)] = round(time.monotonic() - t, 1)
    return {
        "sizes": list(sizes),
        "seed": seed,
        "lookups": lookups,
        "parameters": {"k": K, "alpha": ALPHA, "interval_s": INTERVAL, "ttl_s": TTL, "closest_reuse_s": CLOSEST_REUSE,
                       "provider_cap": PROVIDER_CAP, "publish_spread_s": PUBLISH_SPREAD},  # fmt: skip
        "real": REAL,
        "modeled": MODELED,
        "results": results,
        "wall_s_per_size": timing,
    }


def summary(rep: dict[str, Any]) -> str:
    """One line per strategy and size."""
    lines = [f"simulation, seed {rep['seed']}, {rep['lookups']} finds per size (virtual time; see 'modeled')",
             f"{'strategy':<12} {'N':>5} {'found':>9} {'find ms med/p90':>16} {'hops med':>8} "
             f"{'msgs/find':>9} {'round msgs/node mean/max':>25} {'coverage':>8}"]  # fmt: skip
    for name, rows in rep["results"].items():
        for r in rows:
            f = r["find"]
            sec, hops, msgs = f["seconds"], f["hops"], f["messages"]
            lat = f"{sec['median'] * 1000:.0f}/{sec['p90'] * 1000:.0f}" if sec else "-"
            rnd = r["round_messages_per_node"]
            lines.append(f"{name:<12} {r['nodes']:>5} {f['found']:>4}/{f['sampled']:<4} {lat:>16} "
                         f"{hops['median'] if hops else '-':>8} {msgs['mean'] if msgs else '-':>9} "
                         f"{rnd['mean']:>12}/{rnd['max']:<12} {r['coverage']:>8.3f}")  # fmt: skip
    return "\n".join(lines)
