"""Which exit a client uses: a score per candidate, and a choice that does not flap (sans-IO).

Theory of operation. Every tick the client describes each candidate
(:class:`Candidate`: tunnel up?, age of the last probe answered through the
tunnel, RTT, advertised load, whether its published policy lets general
traffic out) and asks :meth:`Selector.choose` with the current time.

* Available = tunnel up, a probe answered within ``fresh`` seconds, and a
  policy that permits general web traffic. Only available exits are chosen.
* Score (0..100) = 100 · latency factor · load factor, where the latency
  factor is ``50 / (50 + rtt_ms)`` (1 at 0 ms, ½ at 50 ms) and the load
  factor ``1 - 0.75 · load`` (load 0..1 from the record).
* Hysteresis: the current exit is kept while available, unless another one
  scores ``margin`` times better for ``hold`` seconds in a row and the
  current one was chosen at least ``dwell`` seconds ago. An unavailable
  current exit is replaced at once (failover). With no available exit the
  choice stays where it is: traffic then waits in the tunnel's queue or is
  dropped, but never leaks to the real default route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FRESH = 3.0     # seconds: a probe answer older than this makes an exit unavailable
MARGIN = 1.3    # a challenger must score this many times better ...
HOLD = 10.0     # ... for this long ...
DWELL = 30.0    # ... and the current exit must have been chosen this long ago


@dataclass(frozen=True, slots=True)
class Candidate:
    peer_id: str
    connected: bool
    reply_age: float | None      # seconds since the last probe answered through the tunnel
    rtt: float | None            # seconds
    load_permille: int = 0
    capacity_mbit: int = 0
    permits: bool = True         # the published policy lets general traffic out


@dataclass(frozen=True, slots=True)
class Score:
    available: bool
    value: float
    reason: str                  # why unavailable, or "ok"


def score(candidate: Candidate, fresh: float = FRESH) -> Score:
    if not candidate.permits:
        return Score(False, 0.0, "policy does not allow general traffic")
    if not candidate.connected:
        return Score(False, 0.0, "no tunnel")
    if candidate.reply_age is None or candidate.reply_age > fresh:
        return Score(False, 0.0, "no recent probe answer")
    rtt_ms = (candidate.rtt or 0.0) * 1000
    latency = 50.0 / (50.0 + rtt_ms)
    load = 1.0 - 0.75 * min(max(candidate.load_permille, 0), 1000) / 1000
    return Score(True, round(100.0 * latency * load, 2), "ok")


class Selector:
    """Keeps the current choice and the challenger's streak across ticks."""

    def __init__(self, fresh: float = FRESH, margin: float = MARGIN, hold: float = HOLD, dwell: float = DWELL) -> None:
        self.fresh = fresh
        self.margin = margin
        self.hold = hold
        self.dwell = dwell
        self.current: str | None = None
        self.chosen_at = 0.0
        self.switches = 0
        self._challenger: str | None = None
        self._challenger_since = 0.0
        self.scores: dict[str, Score] = {}

    def choose(self, candidates: Sequence[Candidate], now: float) -> str | None:
        """The exit to use from now on (may be the current one, or None before any was available)."""
        self.scores = {c.peer_id: score(c, self.fresh) for c in candidates}
        available = sorted((s.value, pid) for pid, s in self.scores.items() if s.available)
        if not available:
            self._challenger = None
            return self.current
        best_value, best = max(available, key=lambda item: (item[0], item[1]))
        current = self.scores.get(self.current) if self.current is not None else None
        if current is None or not current.available:
            return self._switch(best, now)
        if best == self.current or best_value < current.value * self.margin:
            self._challenger = None
            return self.current
        if self._challenger != best:
            self._challenger, self._challenger_since = best, now
        if now - self._challenger_since >= self.hold and now - self.chosen_at >= self.dwell:
            return self._switch(best, now)
        return self.current

    def _switch(self, peer_id: str, now: float) -> str:
        if peer_id != self.current:
            self.switches += self.current is not None
            self.current = peer_id
            self.chosen_at = now
        self._challenger = None
        return peer_id
