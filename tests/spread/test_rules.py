"""The spreading decisions without I/O: which copy wins, when the DHT is read again."""

from __future__ import annotations

from p2pvpn.spread.rules import DHT_EARLY_RETRY, DHT_EARLY_TRIES, DHT_INTERVAL, SyncSchedule, beats


def test_higher_seq_wins_then_larger_bytes_and_nothing_never_wins() -> None:
    assert beats((2, b"a"), (1, b"z"))
    assert not beats((1, b"z"), (2, b"a"))
    assert beats((3, b"b"), (3, b"a")) and not beats((3, b"a"), (3, b"b"))
    assert not beats((3, b"a"), (3, b"a"))  # equal: nothing to replace
    assert beats((1, b"a"), None)
    assert not beats(None, (1, b"a")) and not beats(None, None)


def test_reads_retry_early_with_doubling_gaps_while_nothing_was_found() -> None:
    s = SyncSchedule()
    assert s.due(0.0)
    now, gaps = 0.0, []
    for _ in range(DHT_EARLY_TRIES + 2):
        assert s.due(now)
        s.start()
        assert not s.due(now + 1000)  # one read at a time
        s.found(False)
        s.finished(now, have_own=False)
        gaps.append(s.next_at - now)
        now = s.next_at
    assert gaps == [DHT_EARLY_RETRY * 2**i for i in range(DHT_EARLY_TRIES - 1)] + [DHT_INTERVAL] * 3


def test_found_copies_read_every_interval_and_soon_interrupts_it_once() -> None:
    s = SyncSchedule()
    starts = []
    now = 0.0
    for _ in range(5):
        assert s.due(now) and not s.due(now - 0.001)
        s.start()
        starts.append(now)
        s.found(True)
        s.finished(now, have_own=False)
        now = s.next_at
    assert starts == [i * DHT_INTERVAL for i in range(5)]
    s.soon()
    assert s.due(starts[-1] + 1.0)  # a better copy learned: read (and publish) now, not in 30 s
    s.start()
    s.found(True)
    s.finished(starts[-1] + 1.0, have_own=True)
    assert s.next_at == starts[-1] + 1.0 + DHT_INTERVAL  # and back to the interval


def test_a_found_copy_or_one_of_our_own_means_the_slow_interval() -> None:
    found = SyncSchedule()
    found.start()
    found.found(True)
    found.finished(100.0, have_own=False)
    assert found.next_at == 100.0 + DHT_INTERVAL and not found.due(101.0)
    own = SyncSchedule()
    own.start()
    own.found(False)
    own.finished(100.0, have_own=True)
    assert own.next_at == 100.0 + DHT_INTERVAL


def test_soon_makes_the_next_read_due_at_once() -> None:
    s = SyncSchedule()
    s.start()
    s.found(True)
    s.finished(50.0, have_own=True)
    assert not s.due(51.0)
    s.soon()
    assert s.due(51.0)
