"""The replay window against a slow reference model (a set of every counter seen)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.datagram.packet import MAX_COUNTER
from p2pvpn.datagram.replay import WINDOW, ReplayWindow


def reference(seen: set[int], counter: int) -> bool:
    highest = max(seen, default=-1)
    return counter < MAX_COUNTER and counter > highest - WINDOW and counter not in seen


def test_in_order_then_replay() -> None:
    window = ReplayWindow()
    assert all(window.accept(c) for c in range(5000))
    assert not window.accept(4999)
    assert not window.accept(0)


def test_window_edges() -> None:
    window = ReplayWindow()
    assert window.accept(10_000)
    assert window.accept(10_000 - WINDOW + 1)      # oldest still inside
    assert not window.accept(10_000 - WINDOW)      # just outside
    assert not window.accept(10_000 - WINDOW + 1)  # seen
    assert window.accept(10_000 + 5 * WINDOW)      # a jump clears the bitmap
    assert not window.accept(10_000)


def test_counter_limit() -> None:
    window = ReplayWindow()
    assert not window.accept(MAX_COUNTER)
    assert window.accept(MAX_COUNTER - 1)


@settings(max_examples=300)
@given(st.lists(st.one_of(st.integers(0, 6000), st.integers(0, 100), st.integers(MAX_COUNTER - 3, MAX_COUNTER + 3)),
                max_size=300))
def test_matches_reference(counters: list[int]) -> None:
    window = ReplayWindow()
    seen: set[int] = set()
    for counter in counters:
        expected = reference(seen, counter)
        assert window.check(counter) == expected
        assert window.accept(counter) == expected
        if expected:
            seen.add(counter)
        assert window.highest == max(seen, default=-1)


@given(st.lists(st.integers(0, 5000), max_size=300))
def test_accept_checked_after_a_passed_check_is_accept(counters: list[int]) -> None:
    """The receive ladder's shortcut: check(), then accept_checked(), leaves the window as accept() would."""
    plain, fast = ReplayWindow(), ReplayWindow()
    for counter in counters:
        expected = plain.accept(counter)
        assert fast.check(counter) == expected
        if expected:
            fast.accept_checked(counter)
        assert (fast.highest, fast._bits) == (plain.highest, plain._bits)
