"""A window of virtual time in a running network: republishes on the node's own schedule, DHT upkeep, lookups.

What every node does in the window:

* **republish**: each node drives a real :class:`p2pvpn.discovery.rules.PublishSchedule`
  (period TTL/2, as ``Discovery._announce_loop`` makes it, its early gaps
  and periods drawn at random, EARLY_JITTER, PERIOD_JITTER): a publish
  (``Strategy.publish``) when ``timer_at`` comes, ``published(end, table
  size)`` when its last store answered, the next at the new ``timer_at``.
  ``steady``: the early republishes are over (a network up for a while),
  each node's last publish at a random moment of the last period; else
  every node starts in the window's first ``spread`` s and publishes at
  once, then at the early times. ``grown`` is asked every round, as
  ``Discovery._table_watch`` asks it (there every 2 s) and would add a
  publish; the model's tables are converged and do not grow, so it never
  does (counted: ``grown``).
* **routing-table refresh**: py-libp2p's maintenance loop
  (``KadDHT._run_main_loop``, every ROUTING_TABLE_REFRESH_INTERVAL = 600 s,
  at once after start) walks to our own ID and to a random ID in each
  non-empty bucket, one walk after the other (:func:`p2pvpn.sim.walks.libp2p_walk`).
  The model's buckets are the XOR bit lengths its table holds.
* **rounds**: ``Strategy.round`` every INTERVAL s (nothing, on demand).
* **lookups** (``lookups_per_minute`` > 0): each node looks up a random
  live member at random moments, ``lookups_per_minute`` on average (a
  first packet for a member it has no tunnel to).

Messages are counted inside the window only, per node and per tag
(publish, refresh, round, lookup), as messages per node per minute.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from libp2p.kad_dht.kad_dht import ROUTING_TABLE_REFRESH_INTERVAL

from p2pvpn.discovery.rules import PublishSchedule
from p2pvpn.sim.strategies import INTERVAL, Strategy
from p2pvpn.sim.walks import Ctx, Found, libp2p_walk
from p2pvpn.sim.world import TTL

TAGS = ("publish", "refresh", "round", "lookup")
IDLE_TAGS = ("publish", "refresh", "round")


def buckets(ctx: Ctx, node: int) -> list[int]:
    """The non-empty buckets of ``node``'s table, as XOR bit lengths (py-libp2p refreshes each)."""
    mine = ctx.table.positions[node]
    return sorted({(mine ^ ctx.table.positions[p]).bit_length() for p in ctx.table.tables[node]})


def refresh(ctx: Ctx, node: int, rng: random.Random, done: Callable[[], None] = lambda: None) -> None:
    """py-libp2p's routing-table refresh: a walk to our own position, then one into each non-empty bucket."""
    mine = ctx.table.positions[node]
    targets = [mine] + [mine ^ (1 << (b - 1) | rng.getrandbits(b - 1)) for b in buckets(ctx, node) if b > 0]

    def step(i: int) -> None:
        if i == len(targets):
            done()
        else:
            libp2p_walk(ctx, node, targets[i], lambda _closest, _requests: step(i + 1), tag="refresh")

    step(0)


def run_window(ctx: Ctx, strategy: Strategy, seconds: float, *, steady: bool = True, spread: float = 5.0,
               lookups_per_minute: float = 0.0, rng: random.Random | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``seconds`` of virtual time from now; messages per node per minute by tag, and the lookups made.

    Events still pending at the end (publishes, lookups under way) run
    after the count is taken, so the network is quiet on return.
    """
    rng = rng or ctx.rng
    sim = ctx.sim
    n = len(ctx.world.members)
    live = [i for i in range(n) if i not in ctx.net.down]
    base = sim.now
    end = base + seconds
    ctx.net.reset_counts()
    sizes = [len(ctx.table.tables[i]) for i in range(n)]
    schedules: dict[int, PublishSchedule] = {}
    publishes = [0] * n
    grown = 0
    found: list[Found] = []

    publishing: set[int] = set()

    def publish(node: int, due: float | None = None) -> None:
        """A publish; ``due``: the timer that asked, ignored once another publish reset it."""
        if sim.now > end or node in publishing or (due is not None and schedules[node].timer_at != due):
            return
        publishing.add(node)
        publishes[node] += 1

        def ended() -> None:
            schedule = schedules[node]
            schedule.published(sim.now - base, sizes[node])
            publishing.discard(node)
            due = schedule.timer_at
            sim.at(base + due - sim.now, lambda: publish(node, due))

        strategy.publish(ctx, node, ended)

    def upkeep(node: int) -> None:
        if sim.now <= end:
            refresh(ctx, node, rng)
            sim.at(ROUTING_TABLE_REFRESH_INTERVAL, lambda: upkeep(node))

    def round_(node: int) -> None:
        nonlocal grown
        if sim.now <= end:
            strategy.round(ctx, node)
            if node not in publishing and schedules[node].grown(sim.now - base, sizes[node]):  # Discovery._table_watch's question
                grown += 1
                sim.at(0.5, lambda: publish(node))
            sim.at(INTERVAL, lambda: round_(node))

    def lookup(src: int) -> None:
        dst = rng.choice(live)
        while dst == src:
            dst = rng.choice(live)
        strategy.find(ctx, src, dst, found.append)

    for node in live:
        # the node's own schedule, its random gaps drawn from the window's rng (one seed, one run)
        schedule = schedules[node] = PublishSchedule(period=TTL / 2, rng=random.Random(rng.random()))
        if steady:
            schedule.count = len(schedule.early)  # the early republishes are behind a node up for a while
            schedule.published(-rng.uniform(0, schedule.period), sizes[node])
            first = schedule.timer_at
            refresh_at = rng.uniform(0, ROUTING_TABLE_REFRESH_INTERVAL)
        else:
            first = refresh_at = rng.uniform(0, spread)
        sim.at(first, lambda node=node, first=first: publish(node, first if steady else None))
        sim.at(refresh_at, lambda node=node: upkeep(node))
        sim.at(rng.uniform(0, INTERVAL), lambda node=node: round_(node))
        for _ in range(_count(rng, lookups_per_minute * seconds / 60)):
            sim.at(rng.uniform(0, seconds), lambda node=node: lookup(node))
    sim.run(until=end)
    minutes = seconds / 60
    per_tag = {tag: [m / minutes for m in ctx.net.messages(tag)] for tag in TAGS}
    total = [m / minutes for m in ctx.net.messages()]
    idle = [sum(per_tag[t][i] for t in IDLE_TAGS) for i in range(n)]
    sim.run()  # what was under way at the end: not counted
    return {
        "live": live,
        "per_tag": {tag: [per_tag[tag][i] for i in live] for tag in TAGS},
        "idle": [idle[i] for i in live],
        "total": [total[i] for i in live],
        "publishes": [publishes[i] for i in live],
        "grown": grown,
        "found": found,
    }


def _count(rng: random.Random, mean: float) -> int:
    """A whole number of events with the given mean (the integer part, plus one with the fraction's chance)."""
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0)
