"""The decisions of spreading, without I/O: which copy wins, when the DHT is read next.

Both spread objects rank as ``(seq, bytes)``: the higher sequence number
wins, then the lexicographically larger bytes (docs/protocol.md §15.5 and
§17.3, also the DHT's select rule), so every node converges on one copy.
"""

from __future__ import annotations

from dataclasses import dataclass

Rank = tuple[int, bytes]  # (seq, the signed object's bytes)

DHT_INTERVAL = 30.0
DHT_EARLY_RETRY = 2.0    # first gap while the DHT has given us nothing yet (e.g. just after start); doubles
DHT_EARLY_TRIES = 4      # reads at 0, 2, 6, 14 s after start, then every DHT_INTERVAL


def beats(ours: Rank | None, theirs: Rank | None) -> bool:
    """Whether ``ours`` should replace ``theirs`` (in the DHT, or at a peer): we have one, and it ranks higher."""
    return ours is not None and (theirs is None or ours > theirs)


@dataclass
class SyncSchedule:
    """When the next DHT read is due: early retries while nothing was found, then every ``interval`` s.

    How cheap one read is stays with the DHT (p2pvpn.discovery.dht.Dht.get:
    the closest peers of our table first, a walk only when they hold
    nothing and none found nothing a moment ago); this schedule only says
    when to read. New copies travel by push along tunnels within a second;
    the periodic read is the catch-up, and :meth:`soon` makes one at once.
    """

    interval: float = DHT_INTERVAL
    early_retry: float = DHT_EARLY_RETRY
    early_tries: int = DHT_EARLY_TRIES
    next_at: float = 0.0
    running: bool = False
    misses: int = 0

    def due(self, now: float) -> bool:
        return not self.running and now >= self.next_at

    def start(self) -> None:
        """A read begins; none other starts until :meth:`finished`."""
        self.running = True

    def soon(self) -> None:
        """Read (and publish) at the next check: we just learned a better copy."""
        self.next_at = 0.0

    def found(self, found: bool) -> None:
        """One read's outcome: a valid copy ends the early retries for good."""
        self.misses = self.early_tries if found else self.misses + 1

    def finished(self, now: float, have_own: bool) -> None:
        self.running = False
        early = self.misses < self.early_tries and not have_own
        self.next_at = now + (self.early_retry * 2 ** max(0, self.misses - 1) if early else self.interval)
