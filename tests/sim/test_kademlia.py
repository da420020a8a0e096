"""The sans-IO Kademlia walk against a brute-force reference, driven by hand (no network, no clock)."""

from __future__ import annotations

import random

import pytest

from p2pvpn.sim.kademlia import ALPHA, K, DriverError, Lookup, RoutingTable, kad_key


def network(n: int, seed: int) -> RoutingTable:
    rng = random.Random(seed)
    return RoutingTable([kad_key(rng.randbytes(38)) for _ in range(n)], rng)


def drive(table: RoutingTable, origin: int, target: int, holder: set[int] | None = None,
          dead: set[int] = frozenset()) -> Lookup[int]:  # fmt: skip
    """Answer every request at once, in the order asked; assert alpha is never exceeded."""
    lookup: Lookup[int] = Lookup(target, table.positions.__getitem__, table.closest(origin, target), exclude=origin)
    in_flight: list[int] = []
    for _ in range(10_000):
        asked = lookup.next_requests()
        in_flight += asked
        assert len(in_flight) <= ALPHA
        if not in_flight:
            break
        peer = in_flight.pop(0)
        if peer in dead:
            lookup.on_failure(peer)
        else:
            lookup.on_reply(peer, table.closest(peer, target), found=holder is not None and peer in holder)
    assert lookup.finished
    return lookup


@pytest.mark.parametrize("n", [5, 30, 300])
def test_walk_finds_the_true_k_closest(n: int) -> None:
    table = network(n, seed=n)
    rng = random.Random(7)
    for _ in range(20):
        origin, target = rng.randrange(n), kad_key(rng.randbytes(8))
        lookup = drive(table, origin, target)
        assert lookup.result() == table.true_closest(target, K, exclude=origin)
        assert 1 <= lookup.hops <= 6
        assert lookup.requests <= n


def test_get_value_stops_at_the_first_holder() -> None:
    table = network(300, seed=1)
    target = kad_key(b"some record key")
    holders = set(table.true_closest(target, K))
    lookup = drive(table, 0, target, holder=holders)
    assert lookup.found_at in holders
    assert lookup.requests < 300 // 4  # a few rounds of alpha, not a flood


def test_dead_peers_drop_out_of_the_result() -> None:
    table = network(200, seed=2)
    target = kad_key(b"x")
    best = table.true_closest(target, K, exclude=0)
    dead = set(best[:5])
    lookup = drive(table, 0, target, dead=dead)
    assert not dead & set(lookup.result())
    assert lookup.failures == len(dead & set(lookup.candidates))
    # the living ones of the true k closest are all found; beyond them only what the tables know (k per bucket)
    assert set(best) - dead <= set(lookup.result())
    learned = sorted((p for p, c in lookup.candidates.items() if c.state == "answered"),
                     key=lambda p: table.positions[p] ^ target)  # fmt: skip
    assert lookup.result() == learned[:K]


def test_an_answer_nobody_asked_for_is_a_driver_bug() -> None:
    table = network(50, seed=3)
    lookup: Lookup[int] = Lookup(1, table.positions.__getitem__, table.closest(0, 1), exclude=0)
    with pytest.raises(DriverError):
        lookup.on_reply(49, [])


def test_routing_table_buckets_hold_at_most_k_per_distance_class() -> None:
    table = network(400, seed=4)
    for node in (0, 17, 399):
        classes: dict[int, int] = {}
        for peer in table.tables[node]:
            d = (table.positions[node] ^ table.positions[peer]).bit_length()
            classes[d] = classes.get(d, 0) + 1
        assert max(classes.values()) <= K
        assert node not in table.tables[node]
