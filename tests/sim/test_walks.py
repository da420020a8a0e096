"""The model's walks and time windows: timeouts, churn, py-libp2p's walk, the real PublishSchedule driven per node."""

from __future__ import annotations

import random

import pytest
from test_strategies import ctx_for

from p2pvpn.discovery.dht import WALK_RPC_TIMEOUT, WALK_TIMEOUT
from p2pvpn.sim.engine import Net, Sim
from p2pvpn.sim.kademlia import K, kad_key
from p2pvpn.sim.strategies import AddressKey, Ctx, Found
from p2pvpn.sim.timeline import buckets, run_window
from p2pvpn.sim.walks import libp2p_walk
from p2pvpn.sim.world import build


@pytest.fixture(scope="module")
def world80():
    return build(80, seed=8)


def published(world, seed: int = 1) -> tuple[Ctx, AddressKey]:
    ctx = ctx_for(world, seed)
    strategy = AddressKey()
    for node in range(len(world.members)):
        ctx.sim.at(ctx.rng.uniform(0, 5), lambda node=node: strategy.publish(ctx, node))
    ctx.sim.run()
    return ctx, strategy


def test_a_request_to_a_gone_node_times_out_and_a_late_reply_is_dropped() -> None:
    sim = Sim()
    net = Net(sim, 3, random.Random(1), lat_min=0.01, lat_max=0.01, rpc_cost=2.0)
    net.down = {1}
    events: list[tuple[str, float]] = []
    net.rpc(0, 1, lambda: "never", lambda a: events.append(("reply", sim.now)), timeout=3.0,
            on_timeout=lambda: events.append(("timeout", sim.now)))  # fmt: skip
    # node 2 is busy 2 s per request: the second request's reply would come at 4.04 s, after its 3 s timeout
    for _ in range(2):
        net.rpc(0, 2, lambda: "ok", lambda a: events.append(("reply", sim.now)), timeout=3.0,
                on_timeout=lambda: events.append(("timeout", sim.now)))  # fmt: skip
    sim.run()
    assert [(e, round(t, 2)) for e, t in events] == [("reply", 2.04), ("timeout", 3.0), ("timeout", 3.0)]
    assert net.timeouts == 2
    assert net.messages() == [5, 1, 4]  # the late reply was sent, and counted, all the same


def test_libp2p_walk_ends_at_the_true_closest(world80) -> None:
    ctx = ctx_for(world80)
    rng = random.Random(3)
    for _ in range(10):
        origin, target = rng.randrange(80), kad_key(rng.randbytes(8))
        out: list[tuple[list[int], int]] = []
        libp2p_walk(ctx, origin, target, lambda closest, requests: out.append((closest, requests)))
        ctx.sim.run()
        closest, requests = out[0]
        assert set(closest) - {origin} >= set(ctx.table.true_closest(target, K, exclude=origin)[: K - 1])
        assert 1 <= requests <= 80


def test_address_lookup_under_churn_fails_over_and_is_bounded(world80) -> None:
    ctx, strategy = published(world80)
    dst = 30
    position = strategy._positions(ctx, dst)[0]
    holders = {p for p, held in strategy.by_key.items() if (dst, position) in held}
    src = next(i for i in range(80) if i not in holders and i != dst)
    # the three closest of src's table gone: the first round's other five answer, the record is found
    ctx.net.down = set(ctx.table.closest(src, position, 3)) - {dst}
    results: list[Found] = []
    strategy.find(ctx, src, dst, results.append)
    ctx.sim.run()
    assert results[-1].found and results[-1].seconds < WALK_RPC_TIMEOUT
    assert ctx.net.timeouts == len(ctx.net.down)
    # every holder and the owner gone: nothing to find; the walk ends by its own bounds, with timeouts counted
    ctx.net.down = holders | {dst}
    strategy.by_key.get(src, set()).discard((dst, position))
    strategy.find(ctx, src, dst, results.append)
    ctx.sim.run()
    assert not results[-1].found
    assert 0 < results[-1].seconds <= WALK_TIMEOUT
    assert ctx.net.timeouts > len(holders) // 2


def test_a_steady_window_publishes_on_the_real_schedule_and_refreshes_each_bucket(world80) -> None:
    ctx, strategy = published(world80)
    w = run_window(ctx, strategy, 600.0, lookups_per_minute=0.5)
    # PublishSchedule(period=TTL/2 = 150 s, counted from the end of the publish before) in steady state:
    # periods drawn in [135, 150] s: three to five publishes in 600 s, each node
    assert set(w["publishes"]) <= {3, 4, 5} and sum(w["publishes"]) >= 3.5 * 80
    assert w["grown"] == 0  # converged tables never grow
    assert all(m > 0 for m in w["per_tag"]["refresh"]) and all(m == 0 for m in w["per_tag"]["round"])
    assert len(buckets(ctx, 0)) >= 2
    lookups = w["found"]
    assert 20 <= len(lookups) and all(f.found for f in lookups)
    # the lookups' messages come on top of the idle ones, node by node
    assert all(t >= i for t, i in zip(w["total"], w["idle"]))
    assert sum(w["total"]) > sum(w["idle"])
