"""The failure boundary and the backoff schedule (p2pvpn.supervisor), without a network."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from p2pvpn.errors import TunError
from p2pvpn.supervisor import Backoff, Failures, classify, contained, one_line


class Timeout(trio.TooSlowError):
    pass


def test_contained_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    failures = Failures()
    with caplog.at_level(logging.WARNING, logger="p2pvpn.supervisor"):
        with contained(failures.reporter("peer-1"), "tunnel_error"):
            raise RuntimeError("boom\nsecond line")
    assert failures.as_dict() == {"tunnel_error": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "peer-1" in warnings[0].getMessage() and "RuntimeError: boom" in warnings[0].getMessage()
    assert "second line" not in warnings[0].getMessage()


def test_specific_kind_wins_and_groups_are_unwrapped() -> None:
    failures = Failures()
    with contained(failures.reporter("p"), "tunnel_error", {Timeout: "tunnel_write_timeout"}):
        raise ExceptionGroup("nursery", [ExceptionGroup("inner", [Timeout()]), ValueError("fallout")])
    with contained(failures.reporter("p"), "tunnel_error", {Timeout: "tunnel_write_timeout"}):
        raise ValueError("other")
    assert failures.as_dict() == {"tunnel_write_timeout": 1, "tunnel_error": 1}


def test_fatal_errors_pass_through() -> None:
    failures = Failures()
    with pytest.raises(ExceptionGroup):
        with contained(failures.reporter("p"), "tunnel_error"):
            raise ExceptionGroup("nursery", [ValueError("x"), TunError("the TUN is gone")])
    with pytest.raises(TunError):
        with contained(failures.reporter("p"), "tunnel_error"):
            raise TunError("gone")
    assert failures.as_dict() == {}
    assert classify(MemoryError(), "x") is None


async def test_cancellation_is_never_contained() -> None:
    failures = Failures()
    with trio.CancelScope() as scope:
        scope.cancel()
        with contained(failures.reporter("p"), "tunnel_error"):
            await trio.sleep(1)
    assert scope.cancelled_caught
    assert failures.as_dict() == {}


def test_one_line() -> None:
    assert one_line(ValueError("a\nb")) == "ValueError: a"
    assert one_line(trio.TooSlowError()) == "TooSlowError"
    assert one_line(ExceptionGroup("g", [KeyError("k")])) == "KeyError: 'k'"


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    backoff = Backoff(1.0, 30.0, jitter=0.2, rng=random.Random(7))
    nominal = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    for expected in nominal:
        assert 0.8 * expected <= backoff.next_delay() <= 1.2 * expected
    assert backoff.attempts == len(nominal)
    backoff.reset()
    assert 0.8 <= backoff.next_delay() <= 1.2


def test_backoff_jitter_spreads_peers() -> None:
    firsts = {round(Backoff(1.0, 30.0, rng=random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(firsts) > 40  # no lockstep


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
    with pytest.raises(ValueError):
        Backoff(1, 2, jitter=1.0)


async def test_supervised_retry_loop_under_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    """A unit that fails three times is retried after the scheduled delays, then runs; time is virtual."""
    failures = Failures()
    backoff = Backoff(1.0, 4.0, jitter=0.0)
    starts: list[float] = []

    async def unit() -> None:
        starts.append(trio.current_time())
        if len(starts) <= 3:
            raise RuntimeError(f"attempt {len(starts)}")

    while len(starts) < 4:
        with contained(failures.reporter("p"), "tunnel_error"):
            await unit()
        if len(starts) < 4:
            await trio.sleep(backoff.next_delay())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([1.0, 2.0, 4.0])
    assert failures.as_dict() == {"tunnel_error": 3}
