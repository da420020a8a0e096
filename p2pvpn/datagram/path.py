"""Which path a tunnel's packets take (docs/protocol.md §16.7), sans-IO: events and ``now`` in, probes out.

States: ``stream`` (the default, and the fallback) and ``udp``.

* ``stream``: probe every candidate endpoint every PROBE_INTERVAL (the first
  PROBE_FAST_COUNT probes per endpoint), then every PROBE_SLOW_INTERVAL.
* ``stream`` -> ``udp``: an authenticated probe reply or data datagram
  arrived; its source address becomes the endpoint.
* ``udp``: a keepalive probe to the endpoint every KEEPALIVE when nothing
  was sent to it, or nothing (reply or data) came back, for KEEPALIVE.
  An authenticated reply or data datagram with a new highest counter from
  another address moves the endpoint there (roaming, as WireGuard).
* ``udp`` -> ``stream``: no authenticated reply or data for PATH_TIMEOUT.

A *probe* from the peer proves only the peer->us direction, so it answers
(the session sends the reply) but never moves the path to ``udp`` nor keeps
it there: otherwise a network that drops our datagrams but passes the
peer's would hold us on ``udp`` and black-hole our packets.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

PROBE_INTERVAL = 1.0
PROBE_FAST_COUNT = 10
PROBE_SLOW_INTERVAL = 5.0
KEEPALIVE = 2.0
PATH_TIMEOUT = 6.0

Endpoint = tuple[str, int]
"""(IP address text, UDP port), as the socket layer gives and takes it."""


class PathState(enum.StrEnum):
    STREAM = "stream"
    UDP = "udp"


@dataclass(slots=True)
class _Schedule:
    sent: int = 0
    next_at: float = 0.0


class Path:
    def __init__(self) -> None:
        self.state = PathState.STREAM
        self.endpoint: Endpoint | None = None
        self.candidates: list[Endpoint] = []
        self._schedule: dict[Endpoint, _Schedule] = {}
        self.last_alive = float("-inf")   # last authenticated reply or data from the peer
        self.last_sent = float("-inf")    # last datagram we sent to the endpoint
        self.last_probe = float("-inf")   # last keepalive probe while udp
        self.changes = 0                  # transitions, for status

    def set_candidates(self, endpoints: Sequence[Endpoint], now: float) -> None:
        """The peer's candidate endpoints, in order; new ones are probed at once."""
        self.candidates = list(dict.fromkeys(endpoints))
        self._schedule = {e: self._schedule.get(e) or _Schedule(0, now) for e in self.candidates}

    def on_alive(self, source: Endpoint, new_highest: bool, now: float) -> None:
        """An authenticated probe reply or data datagram from ``source``."""
        self.last_alive = now
        if self.state is PathState.STREAM:
            self.state = PathState.UDP
            self.endpoint = source
            self.changes += 1
            self.last_probe = now
        elif new_highest and source != self.endpoint:
            self.endpoint = source

    def on_sent(self, now: float) -> None:
        self.last_sent = now

    def poll(self, now: float) -> list[Endpoint]:
        """Advance timers: the endpoints to send a probe to now (the caller sends, then calls ``on_sent``)."""
        if self.state is PathState.UDP and now - self.last_alive >= PATH_TIMEOUT:
            self.state = PathState.STREAM
            self.endpoint = None
            self.changes += 1
            self._schedule = {e: _Schedule(0, now) for e in self.candidates}
        if self.state is PathState.UDP:
            assert self.endpoint is not None
            if now - self.last_probe >= KEEPALIVE and (
                now - self.last_sent >= KEEPALIVE or now - self.last_alive >= KEEPALIVE
            ):
                self.last_probe = now
                return [self.endpoint]
            return []
        due: list[Endpoint] = []
        for endpoint, schedule in self._schedule.items():
            if schedule.next_at <= now:
                schedule.sent += 1
                interval = PROBE_INTERVAL if schedule.sent < PROBE_FAST_COUNT else PROBE_SLOW_INTERVAL
                schedule.next_at = now + interval
                due.append(endpoint)
        return due

    def next_wakeup(self, now: float) -> float:
        """When ``poll`` next has something to do, exactly (no earlier: each wake-up is a scheduler pass).

        While ``udp``, a keepalive is due once KEEPALIVE has passed since the
        last one *and* since the last send or the last authenticated arrival
        (``poll``); traffic both ways keeps moving that time on. (Counting
        from the last keepalive alone made it a time in the past as soon as
        traffic flowed, so the tunnel's timer task woke every 10 ms, its floor,
        for nothing: ~10 % of an echoing node's CPU, docs/performance.md.)"""
        if self.state is PathState.UDP:
            keepalive = max(self.last_probe, min(self.last_sent, self.last_alive)) + KEEPALIVE
            return min(self.last_alive + PATH_TIMEOUT, keepalive)
        times = [s.next_at for s in self._schedule.values()]
        return min(times) if times else now + PROBE_SLOW_INTERVAL
