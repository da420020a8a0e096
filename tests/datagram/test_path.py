"""The path state machine with time passed in: probing, up, keepalive, timeout, roaming."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.datagram.path import KEEPALIVE, PATH_TIMEOUT, PROBE_FAST_COUNT, Path, PathState

E1, E2 = ("198.18.0.2", 4000), ("198.18.1.2", 4000)


def test_probe_schedule_fast_then_slow() -> None:
    path = Path()
    path.set_candidates([E1, E2], 0.0)
    sent: list[float] = []
    t = 0.0
    while t < 30.0:
        if E1 in path.poll(t):
            sent.append(t)
        t = round(t + 0.25, 2)
    assert sent[:PROBE_FAST_COUNT] == [float(i) for i in range(PROBE_FAST_COUNT)]
    assert sent[PROBE_FAST_COUNT:] == [14.0, 19.0, 24.0, 29.0]


def test_up_keepalive_timeout_and_resume() -> None:
    path = Path()
    path.set_candidates([E1], 0.0)
    assert path.poll(0.0) == [E1]
    path.on_alive(E1, True, 0.1)
    assert path.state is PathState.UDP and path.endpoint == E1
    path.on_sent(0.1)
    assert path.poll(0.1 + KEEPALIVE - 0.01) == []
    assert path.poll(0.1 + KEEPALIVE) == [E1]      # idle: keepalive
    path.on_sent(0.1 + KEEPALIVE)
    assert path.poll(0.1 + KEEPALIVE + 0.5) == []  # one per KEEPALIVE
    assert path.state is PathState.UDP
    assert path.poll(0.1 + PATH_TIMEOUT) == [E1]   # nothing came back: stream, probing again at once
    assert path.state is PathState.STREAM and path.endpoint is None


def test_probe_while_sending_when_nothing_comes_back() -> None:
    path = Path()
    path.on_alive(E1, True, 0.0)
    for step in range(1, 9):
        path.on_sent(step * 0.25)  # busy sending
    assert path.poll(KEEPALIVE) == [E1]


def test_roaming_only_on_new_highest() -> None:
    path = Path()
    path.on_alive(E1, True, 0.0)
    path.on_alive(E2, False, 0.1)
    assert path.endpoint == E1
    path.on_alive(E2, True, 0.2)
    assert path.endpoint == E2


def test_while_traffic_flows_both_ways_the_next_wakeup_moves_on_with_it() -> None:
    """An echo every 10 ms each way: the timer's next wake-up stays KEEPALIVE ahead (it woke every 10 ms)."""
    path = Path()
    path.on_alive(E1, True, 0.0)
    t = 0.0
    for _ in range(1000):  # 10 s of traffic
        t = round(t + 0.01, 2)
        path.on_sent(t)
        path.on_alive(E1, True, t + 0.001)
        assert path.next_wakeup(t + 0.001) == t + KEEPALIVE
        assert path.poll(t + 0.001) == []


_TIMES = st.integers(0, 80).map(lambda k: k / 8)  # exact in binary: no rounding at the boundaries


@settings(max_examples=300, deadline=None)
@given(probe=_TIMES, sent=st.one_of(st.just(float("-inf")), _TIMES), alive=_TIMES, now=_TIMES)
def test_next_wakeup_is_exactly_when_poll_next_acts(probe: float, sent: float, alive: float, now: float) -> None:
    """Not later (a missed keepalive or timeout) and not earlier (a wake-up for nothing)."""
    def fresh() -> Path:
        path = Path()
        path.set_candidates([E1], 0.0)
        path.on_alive(E1, True, alive)
        path.last_probe, path.last_sent = min(probe, alive), sent
        return path
    now = max(now, alive, fresh().last_probe, sent)
    wake = fresh().next_wakeup(now)
    if wake > now:
        quiet = fresh()
        assert quiet.poll(now + (wake - now) * 0.999) == [] and quiet.state is PathState.UDP
    acting = fresh()
    assert acting.poll(max(now, wake)) == [E1]  # a keepalive, or the timeout (then probing at once)
