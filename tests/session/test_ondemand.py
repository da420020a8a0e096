"""The on-demand state machines on a fake clock (p2pvpn.session.ondemand)."""

from __future__ import annotations

import pytest

from p2pvpn.session.ondemand import DropKind, IdleTracker, Miss, PendingLookups

A = bytes([100, 64, 0, 1])
B = bytes([100, 64, 0, 2])


def test_first_packet_starts_one_lookup_and_later_ones_wait() -> None:
    pending = PendingLookups(timeout=5, per_destination=3)
    assert pending.miss(A, b"p1", now=0.0) is Miss.LOOKUP
    assert pending.miss(A, b"p2", now=0.1) is Miss.QUEUED
    assert pending.miss(A, b"p3", now=0.2) is Miss.QUEUED
    assert pending.miss(A, b"p4", now=0.3) is Miss.DROPPED  # bounded: overflow counted
    assert pending.drops[DropKind.PENDING_FULL] == 1
    assert pending.lookups == 1
    assert pending.resolved(A) == [b"p1", b"p2", b"p3"]  # in order, all handed over
    assert len(pending) == 0
    assert pending.miss(A, b"p5", now=1.0) is Miss.LOOKUP  # resolved, then routed away again: a new lookup


def test_failed_lookup_drops_counted_and_is_not_retried_at_once() -> None:
    pending = PendingLookups(timeout=5, negative_ttl=2)
    pending.miss(A, b"p1", now=0.0)
    pending.miss(A, b"p2", now=0.0)
    assert pending.failed(A, now=1.0) == [b"p1", b"p2"]
    assert pending.drops[DropKind.UNREACHABLE] == 2
    assert pending.miss(A, b"p3", now=2.9) is Miss.DROPPED
    assert pending.drops[DropKind.UNREACHABLE] == 3
    assert pending.miss(A, b"p4", now=3.0) is Miss.LOOKUP  # negative cache over


def test_deadline_expires_lookups_with_their_packets() -> None:
    pending = PendingLookups(timeout=2)
    pending.miss(A, b"a", now=0.0)
    pending.miss(B, b"b", now=1.0)
    assert pending.next_deadline() == 2.0
    assert pending.expired(1.9) == []
    assert pending.expired(2.0) == [(A, [b"a"])]
    assert pending.waiting(B) and not pending.waiting(A)
    assert pending.next_deadline() == 3.0
    assert pending.expired(10.0) == [(B, [b"b"])]
    assert pending.next_deadline() is None
    assert pending.drops[DropKind.UNREACHABLE] == 2


def test_number_of_destinations_under_lookup_is_bounded() -> None:
    pending = PendingLookups(destinations=2)
    assert pending.miss(A, b"", 0) is Miss.LOOKUP
    assert pending.miss(B, b"", 0) is Miss.LOOKUP
    assert pending.miss(b"\x64\x40\x00\x03", b"", 0) is Miss.DROPPED
    assert pending.drops[DropKind.PENDING_LIMIT] == 1


def test_negative_cache_is_bounded() -> None:
    pending = PendingLookups(destinations=2, negative_ttl=100)
    for i in range(50):
        dst = bytes([100, 64, 1, i])
        pending.miss(dst, b"", 0)
        pending.failed(dst, 0)
    assert len(pending._failed) <= 8


def test_idle_tracker_only_the_opener_closes() -> None:
    idle: IdleTracker[str] = IdleTracker(timeout=10)
    idle.opened("out", 0, initiator=True, now=0)
    idle.opened("in", 0, initiator=False, now=0)
    nothing_pinned = lambda key: False  # noqa: E731
    assert idle.idle(9.9, nothing_pinned) == []
    assert idle.idle(10.0, nothing_pinned) == ["out"]
    assert idle.idle(1000.0, nothing_pinned) == []  # the peer may pin it (static there): its call
    assert idle.closed == 1


def test_traffic_restarts_the_idle_timer() -> None:
    idle: IdleTracker[str] = IdleTracker(timeout=10)
    idle.opened("p", 5, initiator=True, now=0)
    idle.observe("p", 5, True, now=6)   # nothing moved
    idle.observe("p", 7, True, now=8)   # traffic: idle since 8
    assert idle.idle(17.9, lambda k: False) == []
    idle.observe("p", 7, True, now=17.9)  # still 7 packets: the timer keeps running from 8
    assert idle.idle(18.0, lambda k: False) == ["p"]


def test_pinned_tunnels_never_idle() -> None:
    idle: IdleTracker[str] = IdleTracker(timeout=1)
    idle.opened("static", 0, True, 0)
    idle.opened("demand", 0, True, 0)
    assert idle.idle(100, lambda k: k == "static") == ["demand"]
    assert idle.idle(200, lambda k: k == "static") == []
    assert "static" in idle.keys()


def test_check_interval_is_bounded() -> None:
    assert IdleTracker(timeout=300).check_interval() == 5.0
    assert IdleTracker(timeout=1).check_interval() == 0.25
    assert IdleTracker(timeout=0.1).check_interval() == 0.05
    with pytest.raises(ValueError):
        IdleTracker(timeout=0)


# -- SetupTimelines -------------------------------------------------------------------------------


def test_a_timeline_follows_a_set_up_from_first_packet_to_tunnel() -> None:
    from p2pvpn.session.ondemand import SetupTimelines

    lines = SetupTimelines()
    lines.start("100.64.0.9", 10.0, kind="lookup")
    lines.mark("peer", "dial_started", 10.5)  # not attached yet: not this timeline's
    lines.attach("peer", "100.64.0.9")
    lines.mark("peer", "dial_started", 11.0, had_connection=True)
    lines.mark("peer", "dial_started", 11.5)  # a second dial: the first time stays
    lines.mark("peer", "tunnel_up", 12.0, path="direct")
    lines.mark("peer", "connected", 13.0)  # after the tunnel: another story, not recorded
    assert lines.lines() == [{"destination": "100.64.0.9", "first_packet": 10.0, "kind": "lookup",
                              "dial_started": 11.0, "had_connection": True, "tunnel_up": 12.0, "path": "direct"}]


def test_a_set_up_asked_again_keeps_its_first_packet_and_a_finished_one_is_replaced() -> None:
    from p2pvpn.session.ondemand import SetupTimelines

    lines = SetupTimelines()
    first = lines.start("100.64.0.9", 10.0, kind="lookup")
    again = lines.start("100.64.0.9", 16.0, kind="wake")  # the lookup failed its packets, a later one dials
    assert again is first and first["first_packet"] == 10.0 and first["restarts"] == 1 and first["kind"] == "lookup"
    lines.attach("p", "100.64.0.9")
    lines.mark("p", "tunnel_up", 17.0)
    later = lines.start("100.64.0.9", 400.0, kind="lookup")  # idle-closed, then a new first packet
    assert later is not first and later == {"destination": "100.64.0.9", "first_packet": 400.0, "kind": "lookup"}


def test_timelines_are_bounded_and_forget_the_oldest_with_its_peer() -> None:
    from p2pvpn.session.ondemand import SetupTimelines

    lines = SetupTimelines(keep=3)
    for i in range(5):
        lines.start(f"100.64.0.{i}", float(i))
        lines.attach(f"p{i}", f"100.64.0.{i}")
    assert [line["destination"] for line in lines.lines()] == ["100.64.0.2", "100.64.0.3", "100.64.0.4"]
    lines.mark("p0", "tunnel_up", 9.0)  # its timeline is gone: nothing recorded anywhere
    assert all("tunnel_up" not in line for line in lines.lines())
    lines.start("100.64.0.0", 10.0)  # the same destination again: p0's old attachment does not come back
    lines.mark("p0", "tunnel_up", 11.0)
    assert "tunnel_up" not in lines.get("100.64.0.0")  # type: ignore[operator]


def test_an_open_timeline_goes_on_only_so_long() -> None:
    from p2pvpn.session.ondemand import TIMELINE_OPEN, SetupTimelines

    lines = SetupTimelines()
    first = lines.start("100.64.0.9", 10.0)
    assert lines.start("100.64.0.9", 10.0 + TIMELINE_OPEN - 1) is first  # still the same set-up
    fresh = lines.start("100.64.0.9", 10.0 + TIMELINE_OPEN)  # never reached: a new one, the old attempts go
    assert fresh is not first and fresh["first_packet"] == 10.0 + TIMELINE_OPEN
