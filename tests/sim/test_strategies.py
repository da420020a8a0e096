"""The discovery model at small sizes: real records judged by the real validator, the 20-provider cap, counts."""

from __future__ import annotations

import random

import pytest

from p2pvpn.sim import report
from p2pvpn.sim.engine import Net, Sim
from p2pvpn.sim.kademlia import RoutingTable
from p2pvpn.sim.strategies import Ctx, Found, MembersKey, PerKey
from p2pvpn.sim.world import build


@pytest.fixture(scope="module")
def world60():
    return build(60, seed=5)


def ctx_for(world, seed: int = 1) -> Ctx:
    rng = random.Random(seed)
    sim = Sim()
    return Ctx(world, RoutingTable(world.positions, rng), sim, Net(sim, len(world.members), rng), rng)


def publish_all(strategy, ctx: Ctx) -> None:
    for node in range(len(ctx.world.members)):
        ctx.sim.at(ctx.rng.uniform(0, 5), lambda node=node: strategy.publish(ctx, node))
    ctx.sim.run()


def test_engine_runs_events_in_time_order_and_queues_a_busy_node() -> None:
    sim = Sim()
    net = Net(sim, 3, random.Random(1), lat_min=0.01, lat_max=0.01, rpc_cost=0.5)
    done: list[tuple[int, float]] = []
    for src in (0, 1):
        net.rpc(src, 2, lambda: "ok", lambda ans, src=src: done.append((src, sim.now)))
    sim.run()
    # both arrive at 0.02; node 2 serves one at a time: replies leave at 0.52 and 1.02, arrive 0.02 later
    assert [round(t, 3) for _, t in done] == [0.54, 1.04]
    assert net.messages() == [2, 2, 4]


def test_world_records_are_real_and_judged_by_the_validator(world60) -> None:
    assert all(world60.open(m.index, m.sealed) for m in world60.members[:5])
    tampered = bytearray(world60.members[3].sealed)
    tampered[-1] ^= 1
    before = world60.rejected
    assert not world60.open(3, bytes(tampered))
    assert not world60.open(4, world60.members[3].sealed)  # another member's record under this key
    assert world60.rejected == before + 2


def test_per_key_finds_every_member(world60) -> None:
    ctx = ctx_for(world60)
    strategy = PerKey()
    publish_all(strategy, ctx)
    assert strategy.coverage(ctx) == 1.0
    results: list[Found] = []
    for src, dst in [(0, 59), (10, 20), (33, 1), (5, 6)]:
        strategy.find(ctx, src, dst, results.append)
        ctx.sim.run()
    assert len(results) == 4 and all(r.found and r.seconds > 0 and r.hops >= 1 for r in results)


def test_members_key_sees_about_twenty_of_sixty(world60) -> None:
    ctx = ctx_for(world60)
    strategy = MembersKey()
    publish_all(strategy, ctx)
    assert all(len(p) <= 20 for p in strategy.providers.values())
    listed = round(strategy.coverage(ctx) * 60)
    assert 20 <= listed < 60  # the cap: the first 20 at each of the k closest, a few more in their union
    findable = [i for i in range(60) if any(i in p for p in strategy.providers.values())]
    hidden = next(i for i in range(60) if i not in findable)
    results: list[Found] = []
    strategy.find(ctx, findable[0] if findable[0] != 0 else findable[1], hidden, results.append)
    ctx.sim.run()
    assert results and not results[0].found


def test_members_key_finds_everyone_below_the_cap() -> None:
    world = build(12, seed=6)
    ctx = ctx_for(world)
    strategy = MembersKey()
    publish_all(strategy, ctx)
    assert strategy.coverage(ctx) == 1.0
    results: list[Found] = []
    strategy.find(ctx, 0, 11, results.append)
    ctx.sim.run()
    assert results[0].found


def test_report_sweep_shape_and_churn() -> None:
    rep = report.run([10, 40], ["members-key", "addr-key"], lookups=10, seed=3, window=60, churn=0.1)
    assert set(rep["results"]) == {"members-key", "addr-key"}
    for rows in rep["results"].values():
        assert [r["nodes"] for r in rows] == [10, 40]
        for r in rows:
            assert r["find"]["sampled"] == 10 and r["churn"]["sampled"] == 10
            assert r["churn"]["gone"] == round(0.1 * r["nodes"])
            assert r["window"]["idle_per_min"]["n"] == r["nodes"]
            assert r["window"]["total_per_min"]["mean"] >= r["window"]["idle_per_min"]["mean"] > 0
            assert r["validations"] > 0
    addr = rep["results"]["addr-key"]
    assert all(r["find"]["found"] == 10 and r["churn"]["found"] == 10 and r["coverage"] == 1.0 for r in addr)
    # at 10 nodes every node holds every record (k = 20 > N): a lookup answers from the local copy
    assert addr[0]["find"]["local"] == 10 and addr[0]["find"]["requests"]["max"] == 0
    members = rep["results"]["members-key"]
    assert members[0]["coverage"] == 1.0 and members[1]["coverage"] < 1.0
    # an on-demand node's rounds send nothing (no tunnels in use); the old design's ask for providers every 10 s
    rounds = [r["window"]["per_tag_per_min"]["round"] for r in (addr[1], members[1])]
    assert rounds[0]["max"] == 0 and rounds[1]["mean"] > 0
    assert "addr-key" in report.summary(rep)
    with pytest.raises(ValueError, match="unknown strategy"):
        report.run([10], ["gossip"], lookups=1, seed=1)


def test_address_key_publishes_as_dht_publish_does(world60) -> None:
    """Both address keys (address.keys_of), the record key, each stored at ~k peers; "members" only before."""
    from p2pvpn.discovery.address import keys_of
    from p2pvpn.sim.kademlia import kad_key
    from p2pvpn.sim.strategies import AddressKey, AddressKeyMembers

    ctx = ctx_for(world60)
    strategy = AddressKey()
    publish_all(strategy, ctx)
    assert strategy.coverage(ctx) == 1.0
    member = world60.members[9]
    for key in keys_of(world60.network, member.record):
        holders = [p for p, held in strategy.by_key.items() if (9, kad_key(key.encode())) in held]
        assert 18 <= len(holders) <= 20  # the k closest py-libp2p's walk returned, ourselves aside
    assert sum(1 for held in strategy.records.values() if 9 in held) >= 18
    assert not strategy.providers  # on demand a member provides no "members" (rules.provided_roles)
    before = AddressKeyMembers()
    ctx2 = ctx_for(world60)
    publish_all(before, ctx2)
    assert max(len(p) for p in before.providers.values()) == 20  # "members" at its cap: 60 providers
    assert before.coverage(ctx2) == 1.0
    assert sum(ctx.net.sent) < sum(ctx2.net.sent)
    # the busiest node is one of the 20 closest to "members": it serves every member's ADD_PROVIDER
    assert max(ctx.net.messages()) < max(ctx2.net.messages())


def test_address_key_lookup_asks_the_first_round_then_walks_only_without_an_answer(world60) -> None:
    """AddressKey.find drives rules.first_asks as Dht.get_address does: 3 table peers + connected ones, then the walk goes on."""
    from p2pvpn.discovery.rules import ADDRESS_CONNECTED_ASK, ADDRESS_FIRST_ASK
    from p2pvpn.sim.strategies import AddressKey

    ctx = ctx_for(world60)
    strategy = AddressKey()
    publish_all(strategy, ctx)
    results: list[Found] = []
    position = strategy._positions(ctx, 42)[0]
    src = next(i for i in range(60) if not strategy.holds(i, 42, position) and i != 42)
    before = sum(ctx.net.sent)
    strategy.find(ctx, src, 42, results.append)
    ctx.sim.run()
    # a converged table's closest peers hold the record: one round trip, at most 3 + 5 requests and replies
    assert results[-1].found and results[-1].hops == 1
    assert results[-1].requests <= ADDRESS_FIRST_ASK + ADDRESS_CONNECTED_ASK
    assert sum(ctx.net.sent) - before == 2 * results[-1].requests
    # the record is now in src's value store: a second lookup answers locally, without a message
    before = sum(ctx.net.sent)
    strategy.find(ctx, src, 42, results.append)
    ctx.sim.run()
    assert results[-1].found and results[-1].requests == 0 and sum(ctx.net.sent) == before
    # Nobody asked first holds it (they lost it, say): the walk finds it at another of the k closest, a round later.
    asked = set(ctx.table.closest(src, position, ADDRESS_FIRST_ASK + ADDRESS_CONNECTED_ASK)) | {0, 1, 2, src}
    for peer, held in strategy.by_key.items():
        if peer in asked:
            held.discard((42, position))
    strategy.find(ctx, src, 42, results.append)
    ctx.sim.run()
    assert results[-1].found  # at another of the k closest: a seed of src's table (hops 1) or one a reply named
    # the first round, then the walk's requests (alpha at a time, from the closest not yet asked)
    assert results[-1].requests > ADDRESS_FIRST_ASK + ADDRESS_CONNECTED_ASK


def test_the_value_walk_costs_a_fraction_of_py_libp2p_get_value(world60) -> None:
    """per-key (GET_VALUE from the start, stop at the first valid) against per-key-libp2p (FIND_NODE walk first)."""
    from p2pvpn.sim.strategies import PerKeyLibp2p

    costs: dict[str, int] = {}
    for strategy in (PerKey(), PerKeyLibp2p()):
        ctx = ctx_for(world60)
        publish_all(strategy, ctx)
        before = sum(ctx.net.sent)
        results: list[Found] = []
        for src, dst in [(7, 42), (10, 20), (33, 1), (5, 6), (50, 12)]:
            strategy.find(ctx, src, dst, results.append)
            ctx.sim.run()
        assert len(results) == 5 and all(r.found for r in results)
        costs[strategy.name] = sum(ctx.net.sent) - before
    assert costs["per-key"] * 3 <= costs["per-key-libp2p"], costs
