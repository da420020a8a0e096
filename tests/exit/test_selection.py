"""Exit selection without I/O: scores, first choice, failover, and no flapping."""

from __future__ import annotations

import random

from p2pvpn.exit.selection import DWELL, FRESH, HOLD, MARGIN, Candidate, Selector, score


def cand(pid: str, rtt_ms: float = 10.0, load: int = 0, *, connected: bool = True, age: float | None = 0.5,
         permits: bool = True) -> Candidate:
    return Candidate(pid, connected, age, rtt_ms / 1000, load, 100, permits)


def test_score_falls_with_latency_and_load_and_is_zero_when_unavailable() -> None:
    assert score(cand("a", rtt_ms=0)).value == 100.0
    assert score(cand("a", rtt_ms=50)).value == 50.0
    assert score(cand("a", rtt_ms=0, load=1000)).value == 25.0
    assert score(cand("a", rtt_ms=10)).value > score(cand("a", rtt_ms=40)).value
    assert score(cand("a", load=100)).value > score(cand("a", load=900)).value
    for unavailable, reason in ((cand("a", connected=False), "no tunnel"),
                                (cand("a", age=None), "no recent probe answer"),
                                (cand("a", age=FRESH + 0.1), "no recent probe answer"),
                                (cand("a", permits=False), "policy")):
        s = score(unavailable)
        assert not s.available and s.value == 0 and reason in s.reason


def test_first_choice_is_the_best_available_and_none_before_any() -> None:
    sel = Selector()
    assert sel.choose([], 0.0) is None
    assert sel.choose([cand("a", connected=False)], 0.0) is None
    assert sel.choose([cand("a", rtt_ms=30), cand("b", rtt_ms=5), cand("c", rtt_ms=1, connected=False)], 1.0) == "b"
    assert sel.switches == 0


def test_an_unavailable_exit_is_replaced_at_once() -> None:
    sel = Selector()
    assert sel.choose([cand("a", rtt_ms=1), cand("b", rtt_ms=30)], 0.0) == "a"
    assert sel.choose([cand("a", connected=False), cand("b", rtt_ms=30)], 0.5) == "b"  # killed: tunnel gone
    assert sel.switches == 1
    assert sel.choose([cand("a", rtt_ms=1), cand("b", age=FRESH + 1)], 1.0) == "a"      # hung: probes unanswered
    assert sel.switches == 2


def test_with_no_exit_available_the_choice_stays_so_traffic_never_leaks_elsewhere() -> None:
    sel = Selector()
    sel.choose([cand("a")], 0.0)
    assert sel.choose([cand("a", connected=False)], 1.0) == "a"
    assert sel.switches == 0


def test_a_better_exit_wins_only_after_holding_a_clear_lead() -> None:
    sel = Selector()
    assert sel.choose([cand("a", rtt_ms=20), cand("b", rtt_ms=20)], 0.0) in ("a", "b")
    first = sel.current
    other = "b" if first == "a" else "a"

    def both(now: float, other_rtt: float) -> str | None:
        return sel.choose([cand(first, rtt_ms=20), cand(other, rtt_ms=other_rtt)], now)  # type: ignore[arg-type]

    # Slightly better (within MARGIN): never a switch, however long.
    for t in range(1, 200):
        assert both(float(t), 20 / MARGIN + 1) == first
    # Clearly better, but not for HOLD seconds yet.
    now = 200.0
    assert both(now, 1.0) == first
    assert both(now + HOLD - 0.5, 1.0) == first
    # A dip in the lead restarts the streak.
    assert both(now + HOLD - 0.2, 20.0) == first
    assert both(now + HOLD, 1.0) == first
    assert both(now + 2 * HOLD + 0.1, 1.0) == other
    assert sel.switches == 1


def test_dwell_time_keeps_a_fresh_choice() -> None:
    sel = Selector()
    sel.choose([cand("a", rtt_ms=1), cand("b", connected=False)], 0.0)
    sel.choose([cand("a", connected=False), cand("b", rtt_ms=40)], 1.0)  # failover to b at t=1
    for t in range(2, int(DWELL)):  # a is far better again, but b was chosen less than DWELL ago
        assert sel.choose([cand("a", rtt_ms=1), cand("b", rtt_ms=40)], float(t)) == "b"
    assert sel.choose([cand("a", rtt_ms=1), cand("b", rtt_ms=40)], DWELL + 2) == "a"


def test_noisy_latencies_do_not_make_the_choice_flap() -> None:
    """Two equal exits whose RTTs jitter ±50 %: over 10 minutes of ticks the choice never moves."""
    rng = random.Random(7)
    sel = Selector()
    t = 0.0
    for _ in range(1200):
        sel.choose([cand("a", rtt_ms=20 * rng.uniform(0.5, 1.5)), cand("b", rtt_ms=20 * rng.uniform(0.5, 1.5))], t)
        t += 0.5
    assert sel.switches == 0
