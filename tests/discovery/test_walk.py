"""The sans-IO value walk (p2pvpn.discovery.walk), driven by hand over a random network: no network, no clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.discovery.walk import ALPHA, K, DriverError, Lookup


class Net:
    """``n`` peers at random positions; each knows a random few plus its true closest (a converged-ish table)."""

    def __init__(self, n: int, seed: int, known: int = 8) -> None:
        rng = random.Random(seed)
        self.pos = [rng.getrandbits(64) for _ in range(n)]
        self.tables = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            near = sorted(others, key=lambda j: self.pos[i] ^ self.pos[j])[:known]
            self.tables.append(list(dict.fromkeys(near + rng.sample(others, min(known, len(others))))))

    def closest(self, peer: int, target: int) -> list[int]:
        return sorted(self.tables[peer], key=lambda j: self.pos[j] ^ target)[:K]


def run(net: Net, origin: int, target: int, valid: set[int], invalid: set[int] = frozenset(),
        dead: set[int] = frozenset(), first: list[int] = (), rng: random.Random | None = None,
        max_requests: int = 60, release_at: int | None = None) -> tuple[Lookup[int], list[int]]:  # fmt: skip
    """Drive one lookup to its end, answering in flight requests in a random order; return it and every peer asked."""
    rng = rng or random.Random(0)
    lookup: Lookup[int] = Lookup(target, net.pos.__getitem__, net.closest(origin, target), exclude=origin,
                                 max_requests=max_requests)
    asked: list[int] = list(lookup.ask_first(first))
    in_flight = list(asked)
    released: set[int] = set()
    for step in range(10_000):
        if release_at is not None and step == release_at:
            lookup.release_first()
            released = {p for p in in_flight if p in first}
        new = lookup.next_requests()
        asked += new
        in_flight += new
        # past the first round, alpha bounds what is in flight (the first round's slow peers, once released, aside)
        assert not new or len([p for p in in_flight if p not in released]) <= ALPHA
        if not in_flight:
            break
        peer = in_flight.pop(rng.randrange(len(in_flight)))
        if peer in dead:
            lookup.on_failure(peer)
        else:
            lookup.on_reply(peer, net.closest(peer, target), found=peer in valid, invalid=peer in invalid)
    return lookup, asked


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 120), seed=st.integers(0, 2**32), holders=st.integers(0, 5), dead=st.integers(0, 30),
       bad=st.integers(0, 5), first=st.integers(0, 8), bound=st.integers(1, 80),
       release=st.none() | st.integers(0, 10))
def test_any_walk_ends_within_its_bound_and_asks_no_peer_twice(
        n: int, seed: int, holders: int, dead: int, bad: int, first: int, bound: int,
        release: int | None) -> None:  # fmt: skip
    net = Net(n, seed)
    rng = random.Random(seed)
    target = rng.getrandbits(64)
    peers = list(range(1, n))
    valid = set(rng.sample(peers, min(holders, len(peers))))
    invalid = set(rng.sample(peers, min(bad, len(peers)))) - valid
    down = set(rng.sample(peers, min(dead, len(peers))))
    lookup, asked = run(net, 0, target, valid, invalid, down, rng.sample(peers, min(first, len(peers))), rng,
                        max_requests=bound, release_at=release)
    assert lookup.finished and lookup.next_requests() == []
    assert len(asked) == len(set(asked)) == lookup.requests <= bound  # never a peer twice, never past the bound
    assert 0 not in asked  # never ourselves
    if lookup.found_at is not None:
        assert lookup.found_at in valid and lookup.found_at not in down
    assert lookup.invalid == sum(1 for p in asked if p in invalid and p not in down)


def test_the_walk_stops_at_the_first_valid_value() -> None:
    net = Net(300, seed=1)
    target = 12345
    holders = set(sorted(range(1, 300), key=lambda j: net.pos[j] ^ target)[:K])
    lookup: Lookup[int] = Lookup(target, net.pos.__getitem__, net.closest(0, target), exclude=0)
    for _ in range(1000):
        batch = lookup.next_requests()
        assert batch, "the walk stalled before finding a holder"
        holder = next((p for p in batch if p in holders), None)
        for peer in batch:
            lookup.on_reply(peer, net.closest(peer, target), found=peer in holders)
            if peer == holder:
                break
        if holder is not None:
            break
    assert lookup.finished and lookup.found_at in holders
    assert lookup.next_requests() == []  # the replies still in flight change nothing
    assert lookup.requests < 300 // 4  # a few rounds of alpha, not a flood


def test_an_invalid_value_is_counted_and_the_walk_goes_on_to_a_valid_one() -> None:
    net = Net(200, seed=3)
    target = 777
    closest = sorted(range(1, 200), key=lambda j: net.pos[j] ^ target)[:K]
    liar, honest = closest[0], set(closest[1:])
    lookup, _ = run(net, 0, target, valid=honest, invalid={liar})
    assert lookup.found_at in honest
    lookup2, _ = run(net, 0, target, valid=set(), invalid=set(closest))
    assert lookup2.found_at is None and lookup2.invalid >= 1 and lookup2.finished


def test_with_no_holder_the_walk_ends_at_the_true_k_closest() -> None:
    net = Net(150, seed=4)
    target = 99
    lookup, asked = run(net, 0, target, valid=set(), max_requests=150)
    truth = sorted(range(1, 150), key=lambda j: net.pos[j] ^ target)[:K]
    assert lookup.result() == truth
    assert len(asked) < 150  # converged before asking everyone


def test_a_failed_peer_makes_room_for_the_next_closest() -> None:
    net = Net(100, seed=5)
    target = 5
    truth = sorted(range(1, 100), key=lambda j: net.pos[j] ^ target)
    dead = set(truth[:3])
    lookup, _ = run(net, 0, target, valid=set(), dead=dead, max_requests=100)
    assert lookup.result() == [p for p in truth if p not in dead][:K]
    assert lookup.failures >= 1


def test_the_first_round_goes_past_alpha_once_and_its_peers_are_not_asked_again() -> None:
    net = Net(60, seed=6)
    lookup: Lookup[int] = Lookup(1, net.pos.__getitem__, net.closest(0, 1), exclude=0)
    first = lookup.ask_first([5, 6, 7, 8, 9, 5, 0])
    assert first == [5, 6, 7, 8, 9]  # 5 once, ourselves never
    assert lookup.next_requests() == []  # five in flight: more than alpha already
    assert lookup.ask_first([5]) == []
    for peer in first:
        lookup.on_reply(peer, net.closest(peer, 1))
    assert not set(lookup.next_requests()) & set(first)


def test_an_answer_nobody_asked_for_is_a_driver_error() -> None:
    lookup: Lookup[int] = Lookup(0, lambda p: p, [1, 2])
    with pytest.raises(DriverError):
        lookup.on_reply(3, [])


def test_released_slow_first_round_peers_let_the_walk_go_on_and_still_count() -> None:
    net = Net(60, seed=7)
    target = 2
    lookup: Lookup[int] = Lookup(target, net.pos.__getitem__, net.closest(0, target), exclude=0)
    slow = lookup.ask_first([11, 12, 13, 14])
    assert lookup.next_requests() == []  # four in flight
    lookup.release_first()
    walkers = lookup.next_requests()
    assert len(walkers) == ALPHA and not set(walkers) & set(slow)  # the walk goes on beside them
    assert lookup.next_requests() == []  # alpha again
    lookup.on_reply(slow[0], net.closest(slow[0], target), found=True)  # a late answer still ends it
    assert lookup.finished and lookup.found_at == slow[0]


def test_a_peer_given_up_on_may_still_answer_and_its_value_counts() -> None:
    lookup: Lookup[int] = Lookup(0, lambda p: p, [1, 2, 3, 4])
    assert lookup.next_requests() == [1, 2, 3]
    lookup.on_failure(1)  # silent too long: the walk goes on without it
    assert lookup.gave_up_on(1) and not lookup.gave_up_on(2) and not lookup.gave_up_on(9)
    assert lookup.next_requests() == [4]
    with pytest.raises(DriverError):
        lookup.on_late_reply(2, [])  # still in flight: not late
    lookup.on_late_reply(1, [5], found=True)
    assert lookup.finished and lookup.found_at == 1 and lookup.late == 1 and lookup.failures == 1
    assert 5 in lookup.candidates and 1 in lookup.result()  # it answered: live again
    with pytest.raises(DriverError):
        lookup.on_late_reply(1, [])  # once
