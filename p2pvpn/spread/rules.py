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
DHT_FULL_EVERY = 10      # every 10th periodic read is a full lookup (~5 min); the others ask the closest peers


def beats(ours: Rank | None, theirs: Rank | None) -> bool:
    """Whether ``ours`` should replace ``theirs`` (in the DHT, or at a peer): we have one, and it ranks higher."""
    return ours is not None and (theirs is None or ours > theirs)


@dataclass
class SyncSchedule:
    """When the next DHT read is due, and whether it is a full lookup or asks only the closest peers we know.

    Why: every member reads the two keys every DHT_INTERVAL s, and a full
    lookup costs ~40 RPCs on a 50-member network, most of them finding that
    nothing changed: at 50 nodes those reads were most of an idle node's
    CPU. New copies travel by push along tunnels within a second; the
    periodic read is the catch-up, so it asks the closest peers (one round
    trip, 3 RPCs) and makes a full lookup only early, after :meth:`soon`,
    and every DHT_FULL_EVERY-th time.
    """

    interval: float = DHT_INTERVAL
    early_retry: float = DHT_EARLY_RETRY
    early_tries: int = DHT_EARLY_TRIES
    full_every: int = DHT_FULL_EVERY
    next_at: float = 0.0
    running: bool = False
    misses: int = 0
    reads: int = 0          # periodic reads since the last full one
    full_due: bool = True   # the next read is a full lookup

    def due(self, now: float) -> bool:
        return not self.running and now >= self.next_at

    def start(self) -> bool:
        """A read begins; True if it must be a full lookup."""
        self.running = True
        full = self.full_due or self.misses < self.early_tries or self.reads + 1 >= self.full_every
        self.reads = 0 if full else self.reads + 1
        self.full_due = False
        return full

    def soon(self) -> None:
        """Read (and publish) fully at the next check: we just learned a better copy."""
        self.next_at = 0.0
        self.full_due = True

    def found(self, found: bool) -> None:
        """One read's outcome: a valid copy ends the early retries for good."""
        self.misses = self.early_tries if found else self.misses + 1

    def finished(self, now: float, have_own: bool) -> None:
        self.running = False
        early = self.misses < self.early_tries and not have_own
        self.next_at = now + (self.early_retry * 2 ** max(0, self.misses - 1) if early else self.interval)
