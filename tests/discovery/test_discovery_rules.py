"""The sans-IO DHT decisions (p2pvpn.discovery.rules): an address lookup's first round, when we publish again."""

from __future__ import annotations

import random
import statistics

import pytest

from p2pvpn.discovery.rules import (
    EARLY_JITTER,
    EARLY_REPUBLISH,
    GROW_BY,
    GROW_GAP,
    GROW_MIN,
    PERIOD_JITTER,
    PublishSchedule,
    first_asks,
    provided_roles,
)


def test_first_asks_keeps_the_table_closest_then_the_closest_connected_peers_bounded() -> None:
    distance = {"a": 5, "b": 1, "c": 9, "d": 3, "e": 7, "f": 2}.__getitem__
    # Table peers first, in their order (already closest first), never twice; then connected by distance.
    assert first_asks(["c", "a"], ["e", "a", "b", "d", "f", "b"], distance, limit=3) == ["c", "a", "b", "f", "d"]
    assert first_asks(["c"], ["e", "b"], distance, limit=0) == ["c"]  # no connected peer asked
    assert first_asks([], ["e", "b"], distance, limit=5) == ["b", "e"]  # fewer connected than the limit
    assert first_asks(["a", "a"], [], distance, limit=2) == ["a"]
    peers = [str(i) for i in range(100)]
    asks = first_asks(peers[:3], peers, lambda p: -int(p), limit=5)
    assert asks == ["0", "1", "2", "99", "98", "97", "96", "95"]  # fan-out 3 + 5 whatever the connections


def test_the_timer_counts_each_early_gap_from_the_last_publish_then_the_period() -> None:
    s = PublishSchedule(period=300.0, early_jitter=0.0, period_jitter=0.0)
    assert s.timer_at == 0.0  # the first publish is due at once
    at, gaps = 100.0, []
    for _ in range(len(EARLY_REPUBLISH) + 2):
        s.published(at + 1.0, table_size=5)  # each publish takes 1 s
        gaps.append(s.timer_at - (at + 1.0))
        at = s.timer_at
    assert gaps == [*EARLY_REPUBLISH, 300.0, 300.0]


def test_any_publish_uses_up_an_early_gap_and_the_period_caps_them() -> None:
    s = PublishSchedule(period=20.0, early_jitter=0.0, period_jitter=0.0)
    s.published(1.0, 3)
    assert s.timer_at == 1.0 + EARLY_REPUBLISH[0]
    s.published(5.0, 8)  # asked (record changed, or the table grew) before the timer
    assert s.timer_at == 5.0 + min(EARLY_REPUBLISH[1], 20.0)  # the next gap, capped by the period
    late = PublishSchedule(period=150.0, early=(), period_jitter=0.0)
    late.published(0.0, 1)
    assert late.timer_at == 150.0


def gaps_of(s: PublishSchedule, publishes: int) -> list[float]:
    """The timer's gaps after ``publishes`` publishes, each ending when the timer asked (1 s each)."""
    at, gaps = 0.0, []
    for _ in range(publishes):
        s.published(at + 1.0, table_size=5)
        gaps.append(s.timer_at - (at + 1.0))
        at = s.timer_at
    return gaps


def test_each_early_gap_is_drawn_around_its_value_and_each_period_never_later() -> None:
    period = 150.0
    nodes = [gaps_of(PublishSchedule(period=period, rng=random.Random(seed)), len(EARLY_REPUBLISH) + 3)
             for seed in range(200)]
    for i, gap in enumerate(EARLY_REPUBLISH):
        drawn = [g[i] for g in nodes]
        low, high = (gap * (1 - EARLY_JITTER), min(gap * (1 + EARLY_JITTER), period)) if gap < period \
            else (period * (1 - PERIOD_JITTER), period)  # an early gap the period caps is drawn as a period
        assert all(low - 1e-9 <= d <= high + 1e-9 for d in drawn)  # bounded spread
        assert len(set(drawn)) == len(drawn)  # 200 nodes started together: 200 different times
        if gap * (1 + EARLY_JITTER) <= period:  # not capped: the same mean, so the same puts per node
            assert abs(statistics.mean(drawn) - gap) < gap * EARLY_JITTER / 4
            assert statistics.pstdev(drawn) > gap * EARLY_JITTER / 4  # spread over the interval, not a few points
    later = [d for g in nodes for d in g[len(EARLY_REPUBLISH):]]
    assert all(period * (1 - PERIOD_JITTER) - 1e-9 <= d <= period + 1e-9 for d in later)  # records (TTL = 2 periods) never lapse
    assert len(set(later)) == len(later)
    # The count: exactly len(EARLY_REPUBLISH) early gaps, whatever the draws, then periods.
    assert all(sum(d < period * (1 - PERIOD_JITTER) for d in g) <= len(EARLY_REPUBLISH) for g in nodes)


def test_a_seeded_schedule_repeats_and_jitter_zero_is_exact() -> None:
    assert gaps_of(PublishSchedule(period=150.0, rng=random.Random(7)), 8) == \
        gaps_of(PublishSchedule(period=150.0, rng=random.Random(7)), 8)
    assert gaps_of(PublishSchedule(period=150.0, rng=random.Random(7)), 8) != \
        gaps_of(PublishSchedule(period=150.0, rng=random.Random(8)), 8)
    exact = PublishSchedule(period=150.0, early_jitter=0.0, period_jitter=0.0)
    assert gaps_of(exact, 6) == pytest.approx([*(min(g, 150.0) for g in EARLY_REPUBLISH), 150.0, 150.0])


@pytest.mark.parametrize(("member", "on_demand", "offered", "roles"), [
    (True, False, [], ["members"]),                       # full mesh: read and provided
    (True, True, [], []),                                 # on demand: nothing reads it, nothing provided
    (True, True, ["relay", "exit"], ["relay", "exit"]),   # roles are provided in both modes
    (True, False, ["exit"], ["members", "exit"]),
    (False, False, ["relay"], ["relay"]),                 # a headless relay is no member
    (True, True, ["members", "exit", "exit"], ["exit"]),  # never "members" on demand, never twice
])
def test_members_is_provided_only_by_full_mesh_members(member: bool, on_demand: bool, offered: list[str],
                                                        roles: list[str]) -> None:
    assert provided_roles(member, on_demand, offered) == roles


@pytest.mark.parametrize(("before", "after", "grown"), [
    (3, 3 + GROW_MIN - 1, False),        # doubled, but by too few peers (3 -> 6)
    (3, 3 + GROW_MIN, True),             # doubled, by enough (3 -> 7)
    (10, 19, False), (10, 20, True),     # doubled
    (40, 40 + GROW_BY - 1, False),       # a large table: neither doubled nor GROW_BY more
    (40, 40 + GROW_BY, True),
    (0, GROW_MIN, True),                 # from nothing (the first publish reached nobody)
    (20, 5, False),                      # shrunk: nothing to do
])
def test_the_table_has_grown_when_doubled_by_enough_or_by_grow_by(before: int, after: int, grown: bool) -> None:
    s = PublishSchedule(period=150.0)
    s.published(0.0, before)
    assert s.grown(GROW_GAP, after) is grown


def test_growth_is_bounded_in_rate_and_measured_from_the_last_publish() -> None:
    s = PublishSchedule(period=150.0)
    assert not s.grown(100.0, 50)  # nothing published yet: the first publish is the timer's
    s.published(0.0, 3)
    assert not s.grown(GROW_GAP - 0.1, 50)  # too soon after the last publish
    assert s.grown(GROW_GAP, 50)
    s.published(GROW_GAP, 50)
    assert not s.grown(GROW_GAP * 3, 50 + GROW_BY - 1)  # grown since start, not since the last publish
    # However fast a table grows, growth publishes come at most every GROW_GAP s: count them over 10 minutes.
    s = PublishSchedule(period=150.0)
    s.published(0.0, 1)
    growth_publishes = 0
    for tick in range(1, 301):  # every 2 s, the table gains 5 peers
        now, size = tick * 2.0, 1 + 5 * tick
        if s.grown(now, size):
            growth_publishes += 1
            s.published(now, size)
    assert growth_publishes <= 600 / GROW_GAP
    assert growth_publishes >= 600 / GROW_GAP / 2  # and it does publish as the table grows
