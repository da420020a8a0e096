"""On-demand tunnels (docs/protocol.md §18), sans-IO: what waits for a lookup, which tunnels are idle.

Theory of operation:
* A packet for an overlay address without a route is a *miss*. The first
  miss for a destination asks the caller to look it up (address record,
  docs/protocol.md §18.2); later packets for it wait in that destination's
  bounded queue (``per_destination`` packets, overflow counted
  ``pending_full``). At most ``destinations`` lookups wait at once (more
  are counted ``pending_limit``), so a scan of the overlay costs bounded
  memory.
* ``resolved`` hands the waiting packets over (to the peer's queue, which
  its dial then drains); ``failed``, or a lookup still open at its
  deadline (``expired``), hands them back for an ICMP "unreachable" and a
  counted drop (``unreachable``). A failed address is not looked up again
  for ``negative_ttl`` seconds: its packets are dropped at once, counted.
* ``IdleTracker`` is told each open tunnel's traffic total (packets in +
  out; keepalives are not traffic) at every check; a tunnel we opened whose
  total has not moved for ``timeout`` seconds is idle. Only the opener
  closes (Close(IDLE)), so the two sides never disagree: a responder cannot
  know whether the opener pins the peer (a static peer there), and closing
  such a tunnel would only make the opener redial at once. Pinned peers
  (static, the exit in use) never idle.

Nothing here reads a clock: every call takes ``now``.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

LOOKUP_TIMEOUT = 5.0        # seconds from the first packet to a tunnel (lookup + dial) before its packets are dropped
PENDING_PACKETS = 32        # packets waiting per destination under lookup
PENDING_DESTINATIONS = 64   # destinations under lookup at once
NEGATIVE_TTL = 5.0          # seconds a failed destination is not looked up again
LOOKUP_LINGER = 20.0        # seconds a lookup goes on after its packets' deadline (its next packet finds a route)
LINGERING_LOOKUPS = 16      # lookups going on past their deadline at once, at most
IDLE_TIMEOUT = 300.0        # default seconds without traffic before a tunnel closes


class Miss(enum.Enum):
    LOOKUP = "lookup"    # first packet for this destination: start a lookup
    QUEUED = "queued"    # waits behind a lookup already running
    DROPPED = "dropped"  # counted in ``drops`` (queue full, too many lookups, recently failed)


class DropKind:
    PENDING_FULL = "pending_full"      # the destination's queue was full
    PENDING_LIMIT = "pending_limit"    # too many destinations under lookup
    UNREACHABLE = "unreachable"        # the lookup or the dial failed, or the destination failed recently


@dataclass
class _Pending:
    deadline: float
    packets: deque[bytes] = field(default_factory=deque)


class PendingLookups:
    """Destinations waiting for an address lookup, each with a bounded packet queue and a deadline."""

    def __init__(
        self,
        timeout: float = LOOKUP_TIMEOUT,
        per_destination: int = PENDING_PACKETS,
        destinations: int = PENDING_DESTINATIONS,
        negative_ttl: float = NEGATIVE_TTL,
    ) -> None:
        self.timeout = timeout
        self.per_destination = per_destination
        self.destinations = destinations
        self.negative_ttl = negative_ttl
        self.drops: Counter[str] = Counter()
        self.lookups = 0   # lookups started
        self._pending: dict[bytes, _Pending] = {}
        self._failed: dict[bytes, float] = {}  # destination -> until when it is not looked up again

    def miss(self, destination: bytes, packet: bytes, now: float) -> Miss:
        """A packet for ``destination``, which has no route: queue it, and say whether to start a lookup."""
        pending = self._pending.get(destination)
        if pending is None:
            until = self._failed.get(destination)
            if until is not None:
                if now < until:
                    self.drops[DropKind.UNREACHABLE] += 1
                    return Miss.DROPPED
                del self._failed[destination]
            if len(self._pending) >= self.destinations:
                self.drops[DropKind.PENDING_LIMIT] += 1
                return Miss.DROPPED
            self._pending[destination] = _Pending(now + self.timeout, deque([packet]))
            self.lookups += 1
            return Miss.LOOKUP
        if len(pending.packets) >= self.per_destination:
            self.drops[DropKind.PENDING_FULL] += 1
            return Miss.DROPPED
        pending.packets.append(packet)
        return Miss.QUEUED

    def waiting(self, destination: bytes) -> bool:
        return destination in self._pending

    def deadline(self, destination: bytes) -> float | None:
        pending = self._pending.get(destination)
        return pending.deadline if pending is not None else None

    def resolved(self, destination: bytes) -> list[bytes]:
        """The lookup found the member: its waiting packets, to queue for the peer (the dial takes over)."""
        pending = self._pending.pop(destination, None)
        self._failed.pop(destination, None)
        return list(pending.packets) if pending is not None else []

    def failed(self, destination: bytes, now: float) -> list[bytes]:
        """The lookup found nothing: its waiting packets (counted dropped), to answer with ICMP unreachable."""
        pending = self._pending.pop(destination, None)
        self._remember_failure(destination, now)
        packets = list(pending.packets) if pending is not None else []
        self.drops[DropKind.UNREACHABLE] += len(packets)
        return packets

    def expired(self, now: float) -> list[tuple[bytes, list[bytes]]]:
        """Lookups past their deadline, removed, with their packets (counted dropped)."""
        out = []
        for destination, pending in list(self._pending.items()):
            if pending.deadline <= now:
                out.append((destination, self.failed(destination, now)))
        return out

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def _remember_failure(self, destination: bytes, now: float) -> None:
        if len(self._failed) >= 4 * self.destinations:  # bounded: forget the oldest failure
            self._failed.pop(next(iter(self._failed)))
        self._failed[destination] = now + self.negative_ttl

    def __len__(self) -> int:
        return len(self._pending)


@dataclass
class _Seen:
    traffic: int
    since: float        # when ``traffic`` last changed (or the tunnel was first seen)
    initiator: bool


class IdleTracker(Generic[K]):
    """Which tunnels we opened carried no traffic for the idle timeout (the peer's own tunnels are its to close)."""

    def __init__(self, timeout: float = IDLE_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("idle timeout must be positive")
        self.timeout = timeout
        self.closed = 0  # tunnels found idle
        self._seen: dict[K, _Seen] = {}

    def observe(self, key: K, traffic: int, initiator: bool, now: float) -> None:
        """The tunnel with ``key`` has carried ``traffic`` packets so far (a new tunnel restarts the count)."""
        seen = self._seen.get(key)
        if seen is None or seen.traffic != traffic or seen.initiator != initiator:
            self._seen[key] = _Seen(traffic, now, initiator)

    def opened(self, key: K, traffic: int, initiator: bool, now: float) -> None:
        """A new tunnel: its idle time starts now, whatever the peer's counters say."""
        self._seen[key] = _Seen(traffic, now, initiator)

    def forget(self, key: K) -> None:
        self._seen.pop(key, None)

    def idle(self, now: float, pinned: Callable[[K], bool]) -> list[K]:
        """Tunnels to close now for idleness (forgotten here; the caller closes them)."""
        out = []
        for key, seen in list(self._seen.items()):
            if seen.initiator and now - seen.since >= self.timeout and not pinned(key):
                out.append(key)
                del self._seen[key]
        self.closed += len(out)
        return out

    def check_interval(self) -> float:
        """How often to observe: a quarter of the timeout, between 0.05 and 5 s (closes at most that late)."""
        return max(0.05, min(5.0, self.timeout / 4))

    def keys(self) -> Iterable[K]:
        return self._seen.keys()


TIMELINES = 64  # set-up timelines kept (the last ones; status ``on_demand.timelines``)
TIMELINE_OPEN = 60.0  # seconds a timeline without a tunnel goes on; a first packet after that starts a new one


class SetupTimelines:
    """Where each on-demand tunnel set-up spent its time: first packet -> lookup -> dial -> connection -> tunnel.

    Why: "reached in 7 s" says nothing about which step waited. One timeline
    per first packet (or wake-up dial), keyed by destination, with the time
    of each step (``now`` from the caller, CLOCK_MONOTONIC seconds, so a
    probe in another namespace can line its own clock up with it) and what
    the lookup did (attempts, GET_VALUEs, where it found the record). Dial
    steps are named by peer: ``attach`` ties a peer to its open timeline.
    Bounded: the oldest of ``keep`` timelines goes first.
    """

    def __init__(self, keep: int = TIMELINES) -> None:
        self.keep = keep
        self._lines: dict[str, dict[str, object]] = {}  # destination (text) -> timeline, oldest first
        self._by_peer: dict[object, str] = {}  # peer -> destination of its open timeline

    def start(self, destination: str, now: float, **info: object) -> dict[str, object]:
        """A first packet (or a wake-up dial) for ``destination``: a new timeline replaces a finished one.

        One whose tunnel is not up yet goes on (a lookup that failed its
        packets and is asked again, a wake-up dial after a late lookup):
        the time counts from its first packet; ``restarts`` counts them.
        Not past TIMELINE_OPEN s, so an unreachable destination's timeline
        (its attempts) does not grow for ever.
        """
        line = self._lines.get(destination)
        if line is not None and "tunnel_up" not in line \
                and now - float(line["first_packet"]) < TIMELINE_OPEN:  # type: ignore[arg-type]
            line["restarts"] = int(line.get("restarts", 0)) + 1  # type: ignore[call-overload]
            return line
        self._lines.pop(destination, None)
        line = {"destination": destination, "first_packet": round(now, 4), **info}
        self._lines[destination] = line
        while len(self._lines) > self.keep:
            gone = next(iter(self._lines))
            del self._lines[gone]
            self._by_peer = {p: d for p, d in self._by_peer.items() if d != gone}
        return line

    def get(self, destination: str) -> dict[str, object] | None:
        return self._lines.get(destination)

    def attach(self, peer: object, destination: str) -> None:
        """Later dial steps of ``peer`` belong to ``destination``'s timeline."""
        if destination in self._lines:
            self._by_peer[peer] = destination

    def mark(self, peer: object, step: str, now: float, **info: object) -> None:
        """Step ``step`` of ``peer``'s open timeline happened at ``now`` (the first time only; ``info`` merged)."""
        line = self._lines.get(self._by_peer.get(peer, ""))
        if line is None:
            return
        line.setdefault(step, round(now, 4))
        line.update(info)
        if step == "tunnel_up":  # the set-up is over: later dials of the peer are another story
            self._by_peer.pop(peer, None)

    def lines(self) -> list[dict[str, object]]:
        return list(self._lines.values())
