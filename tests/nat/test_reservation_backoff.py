"""Retrying relays: a relay that failed while down is tried again soon once it is back."""

from __future__ import annotations

from p2pvpn.nat import reservations
from p2pvpn.nat.reservations import BACKOFF_MAX, BACKOFF_MIN


def keeper() -> reservations.RelayKeeper:
    k = object.__new__(reservations.RelayKeeper)  # only the backoff bookkeeping is exercised
    k._backoff = {}
    k.failures = __import__("collections").Counter()
    return k


def test_failures_double_the_wait_up_to_the_cap() -> None:
    k = keeper()
    for _ in range(20):
        k._fail("relay", "reserve")  # type: ignore[arg-type]
    _, delay = k._backoff["relay"]  # type: ignore[index]
    assert delay == BACKOFF_MAX and k.failures["reserve"] == 20


def test_a_relay_connected_again_waits_only_the_minimum_after_its_last_failure() -> None:
    k = keeper()
    for _ in range(10):
        k._fail("relay", "lost")  # type: ignore[arg-type]
    retry_at, delay = k._backoff["relay"]  # type: ignore[index]
    failed_at = retry_at - delay
    soon = failed_at + BACKOFF_MIN + 0.1
    assert k._backing_off("relay", soon, connected=False)  # type: ignore[arg-type]
    assert not k._backing_off("relay", soon, connected=True)  # type: ignore[arg-type]
    assert k._backing_off("relay", failed_at + 1, connected=True)  # type: ignore[arg-type]
