"""A discrete-event network: a virtual clock, an event queue, per-message latency, per-node CPU queues.

Theory of operation
-------------------
:class:`Sim` is the clock and the queue (a heap of ``(time, seq,
callback)``; ``seq`` keeps events of the same instant in the order they
were scheduled, so a run is deterministic for a seed).

:class:`Net` carries RPCs between node indices, all of it *modeled*:

* **latency**: each node sits ``access`` seconds from a common core
  (drawn once per node, uniform in ``[lat_min, lat_max]``); a message
  from a to b takes ``access[a] + access[b]``;
* **cost**: a node serves one request at a time, ``rpc_cost`` seconds
  each (py-libp2p's measured few milliseconds of Python per DHT request:
  a yamux stream, multistream, a signed peer record), so a node that
  everybody asks queues;
* **churn**: a node in :attr:`Net.down` is gone: a request to it is sent
  (and counted) but never served nor answered; a caller that gave a
  ``timeout`` hears ``on_timeout`` instead, as a real RPC times out;
* no loss, no NAT.

A request with a ``timeout`` whose reply would come later (a queue at a
hot node) also ends in ``on_timeout``; the late reply is still sent and
counted, and dropped. Every request and every reply counts as one message
sent by one node and received by the other (:attr:`Net.sent`,
:attr:`Net.received`), and under its ``tag`` (:attr:`Net.tagged`: what
the traffic was for: publish, lookup, refresh).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

MAX_EVENTS = 50_000_000  # a bound on any one run; a model that needs more is broken


class Sim:
    """Virtual time in seconds and the events due at it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.events = 0

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` ``delay`` seconds from now (never in the past)."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + max(0.0, delay), self._seq, fn))

    def run(self, max_events: int = MAX_EVENTS, until: float | None = None) -> None:
        """Run until no event is left (or none due by ``until``); RuntimeError if ``max_events`` are not enough."""
        for _ in range(max_events):
            if not self._queue or (until is not None and self._queue[0][0] > until):
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.now, _, fn = heapq.heappop(self._queue)
            self.events += 1
            fn()
        raise RuntimeError(f"the simulation did not settle within {max_events} events")


class Net:
    """RPCs between ``n`` nodes over :class:`Sim`, with latency and a CPU queue per node (modeled)."""

    def __init__(
        self, sim: Sim, n: int, rng: random.Random, *, lat_min: float = 0.005, lat_max: float = 0.040,
        rpc_cost: float = 0.003,
    ) -> None:  # fmt: skip
        self.sim = sim
        self.access = [rng.uniform(lat_min, lat_max) for _ in range(n)]
        self.rpc_cost = rpc_cost
        self.busy_until = [0.0] * n
        self.sent = [0] * n
        self.received = [0] * n
        self.tagged: dict[str, list[int]] = {}
        self.down: set[int] = set()
        self.timeouts = 0  # requests that ended in on_timeout

    def latency(self, a: int, b: int) -> float:
        return self.access[a] + self.access[b]

    def reset_counts(self) -> None:
        n = len(self.sent)
        self.sent, self.received = [0] * n, [0] * n
        self.tagged = {}

    def _count(self, src: int, dst: int, tag: str) -> None:
        self.sent[src] += 1
        self.received[dst] += 1
        counts = self.tagged.setdefault(tag, [0] * len(self.sent))
        counts[src] += 1
        counts[dst] += 1

    def rpc(self, src: int, dst: int, serve: Callable[[], Any], on_reply: Callable[[Any], None], *,
            tag: str = "other", timeout: float | None = None, on_timeout: Callable[[], None] | None = None) -> None:
        """``src`` asks ``dst``; ``serve()`` runs at ``dst`` once its CPU is free; ``on_reply`` at ``src``.

        With ``timeout``: ``on_timeout`` instead when no reply came within it
        (``dst`` is down, or queued too long); exactly one of the two runs.
        """
        self._count(src, dst, tag)
        lat = self.latency(src, dst)
        settled = False

        def answered(answer: Any) -> None:
            nonlocal settled
            if not settled:
                settled = True
                on_reply(answer)

        def expired() -> None:
            nonlocal settled
            if not settled:
                settled = True
                self.timeouts += 1
                if on_timeout is not None:
                    on_timeout()

        sent_at = self.sim.now
        if dst in self.down:
            if timeout is not None:
                self.sim.at(timeout, expired)
            return

        def arrive() -> None:
            start = max(self.sim.now, self.busy_until[dst])
            self.busy_until[dst] = start + self.rpc_cost
            answer = serve()
            late = timeout is not None and self.busy_until[dst] + lat - sent_at > timeout
            if late:  # the caller gives up at its timeout; the reply is still sent (and counted)
                self.sim.at(sent_at + timeout - self.sim.now, expired)  # type: ignore[operator]

            def reply() -> None:
                self._count(dst, src, tag)
                if not late:
                    self.sim.at(lat, lambda: answered(answer))

            self.sim.at(self.busy_until[dst] - self.sim.now, reply)

        self.sim.at(lat, arrive)

    def messages(self, tag: str | None = None) -> list[int]:
        """Messages each node sent or received since the last reset (only those of ``tag``, if given)."""
        if tag is not None:
            return list(self.tagged.get(tag, [0] * len(self.sent)))
        return [s + r for s, r in zip(self.sent, self.received)]
