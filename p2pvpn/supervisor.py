"""Failure boundaries: one peer's misbehaviour or one task's bug ends that task, never the node.

Theory of operation: trio hands a child task's exception to its nursery,
which cancels every sibling and re-raises, so without a boundary a tunnel
that hits a write timeout takes ``Node.run`` down with it. ``contained``
is that boundary. It wraps one unit of work (a tunnel, a control request,
a status formatter), catches what the unit raised, logs it once at warning
level with whom it concerned, and counts it in the node-wide ``Failures``
under a *kind* (``tunnel_write_timeout``, ``tunnel_error``,
``control_error``, ...), which ``status`` reports. Two things pass through:

* cancellation (``trio.Cancelled`` is a BaseException, never caught here),
  so shutdown still follows the nursery tree;
* fatal local errors (``FATAL``: the TUN is gone, memory ran out), after
  which the node cannot do its job; they end the node as before.

``Backoff`` is the retry schedule for a unit the caller restarts: sans-IO,
exponential, bounded and jittered, so it is unit-tested without a clock.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from p2pvpn.errors import TunError

log = logging.getLogger(__name__)

FATAL: tuple[type[BaseException], ...] = (TunError, MemoryError)
"""Errors that mean this node cannot work any more: never contained."""


class Failures:
    """Node-wide count of contained failures by kind; survives the tunnels and requests it counts."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, kind: str, who: object, detail: str) -> None:
        """Count one failure and log it once (warning: an operator should see it, the node goes on)."""
        self.counts[kind] += 1
        log.warning("%s (%s): %s", kind, who, detail)

    def reporter(self, who: object) -> OnFailure:
        """An ``on_failure`` for ``contained`` that records failures concerning ``who``."""
        return lambda kind, detail: self.record(kind, who, detail)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for a log line or a status field, never a traceback."""
    found = leaves(exc)
    first = found[0] if found else exc
    text = str(first).strip().splitlines()
    return f"{type(first).__name__}: {text[0]}" if text else type(first).__name__


def classify(exc: BaseException, default: str, kinds: Mapping[type[BaseException], str] = {}) -> str | None:
    """The failure kind of ``exc``, or None if it is fatal and must end the node.

    ``kinds`` maps exception types to more specific kinds; the first leaf
    of a group decides (a nursery's first error is the cause, the rest are
    fallout).
    """
    found = leaves(exc)
    if any(isinstance(leaf, FATAL) for leaf in found):
        return None
    for kind_type, kind in kinds.items():
        if found and isinstance(found[0], kind_type):
            return kind
    return default


OnFailure = Callable[[str, str], None]
"""Told ``(kind, one-line detail)`` of each contained failure: counts and logs it (``Failures.reporter``)."""


@contextmanager
def contained(on_failure: OnFailure, kind: str, kinds: Mapping[type[BaseException], str] = {}) -> Iterator[None]:
    """Run the block; an Exception it raises goes to ``on_failure`` and stops here (unless fatal)."""
    try:
        yield
    except Exception as exc:  # the boundary's whole job: anything a unit raises stops at it
        chosen = classify(exc, kind, kinds)
        if chosen is None:
            raise
        on_failure(chosen, one_line(exc))
        log.debug("contained %s", chosen, exc_info=exc)


class Backoff:
    """Delays before retrying: ``first``, doubling up to ``cap``, each times a uniform factor in 1±``jitter``.

    Jitter keeps many nodes that lost the same peer from retrying in lockstep;
    the cap bounds how long a peer that recovered waits for us.
    """

    def __init__(self, first: float, cap: float, jitter: float = 0.2, rng: random.Random | None = None) -> None:
        if not 0 < first <= cap or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < first <= cap and 0 <= jitter < 1")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = first
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call moves one step up the schedule."""
        delay = self._next * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        self._next = min(self._next * 2, self.cap)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """The unit worked for a while: the next failure starts from ``first`` again."""
        self._next = self.first
        self.attempts = 0
