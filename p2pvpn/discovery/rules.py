"""The DHT decisions of discovery, without I/O: whom an address lookup asks first, when we publish again.

Two problems seen at 50 nodes (docs/performance.md, "Scale"), 30 s after
the last node started, 86 of 116 first-packet lookups found no address
record within 5 s:

* A node stores its records (its node record, its two address records,
  docs/protocol.md §18.2) at the peers closest to each key *as its routing
  table sees them*, and a young table holds little more than the bootstrap
  peers. py-libp2p never moves a value to peers that became closer later,
  so :class:`PublishSchedule` stores them again when the table has grown
  substantially since the last publish, besides the early timer
  (EARLY_REPUBLISH) and the period (TTL / 2), at most every ``min_gap`` s.
* The peers we hold connections to are one round trip away (no dial, no
  walk), and where a young table put the records is exactly there (the
  bootstrap peers, the first peers met). :func:`first_asks` adds the
  connected peers closest to the key to the closest peers of our table, a
  bounded number of each, for the lookup's first round.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

P = TypeVar("P", bound=Hashable)

# A node publishes first when its routing table holds little more than its bootstrap peers, so its record
# (and its address records, §18.2) land on whichever peers it knew then. So it stores them again a few times
# after the start (each gap counted from the end of the publish before): a fixed number of puts per node.
EARLY_REPUBLISH = (10.0, 30.0, 90.0, 270.0)
ADDRESS_FIRST_ASK = 3      # closest peers of our own table asked at once for an address key (Dht.get_address)
ADDRESS_CONNECTED_ASK = 5  # connected DHT servers asked too in that first round (first_asks)
GROW_FACTOR = 2.0   # the table has at least doubled since the last publish ...
GROW_MIN = 4        # ... by at least this many peers (3 -> 6 is not yet "grown"; 3 -> 7 is) ...
GROW_BY = 16        # ... or has gained this many peers, whatever its size
GROW_GAP = 10.0     # seconds between two publishes the growth asks for, at least


def first_asks(table_closest: Sequence[P], connected: Iterable[P], distance: Callable[[P], int],
               limit: int) -> list[P]:
    """Whom the first round of an address lookup asks: our table's closest, then up to ``limit`` connected peers.

    ``table_closest`` (already the few closest of the routing table, in
    order) come first; then the connected peers not among them, the closest
    to the key first (``distance``: the kad XOR distance), at most
    ``limit`` of them. Fan-out is len(table_closest) + limit at most.
    """
    chosen = list(dict.fromkeys(table_closest))
    seen = set(chosen)
    extra = sorted((p for p in dict.fromkeys(connected) if p not in seen), key=distance)
    return chosen + extra[:max(0, limit)]


@dataclass
class PublishSchedule:
    """When our records are stored again: the early timer, the period, and a routing table that has grown.

    Times are seconds on one monotonic clock. ``published`` records each
    publish (with the table size its walks saw); ``timer_at`` is when the
    timer asks for the next one: the next of ``early`` after the end of
    the last publish (each publish, whatever asked for it, uses one up),
    then every ``period``. Counting from the last publish, not from the
    start, matters on a loaded machine: fixed times from the start put
    every node's publish (a walk and 20 PUTs per key) into the seconds in
    which its first packets wait for tunnels (at 20 nodes: tunnels up in
    1.3 s instead of 0.23 s). ``grown`` says whether the table has grown
    enough since the last publish to store our records again now.
    """

    period: float
    early: tuple[float, ...] = EARLY_REPUBLISH
    grow_factor: float = GROW_FACTOR
    grow_min: int = GROW_MIN
    grow_by: int = GROW_BY
    min_gap: float = GROW_GAP
    last_at: float | None = None
    last_size: int = 0
    timer_at: float = 0.0  # the first publish is due at once
    count: int = 0         # publishes so far

    def published(self, now: float, table_size: int) -> None:
        """A publish ended at ``now`` with a table of ``table_size`` peers: the next timer is set from it."""
        gap = self.early[self.count] if self.count < len(self.early) else self.period
        self.count += 1
        self.last_at = now
        self.last_size = table_size
        self.timer_at = now + min(gap, self.period)

    def grown(self, now: float, table_size: int) -> bool:
        """Whether the table grew enough since the last publish to store our records again now."""
        if self.last_at is None or now - self.last_at < self.min_gap:
            return False
        gained = table_size - self.last_size
        doubled = table_size >= self.last_size * self.grow_factor and gained >= self.grow_min
        return doubled or gained >= self.grow_by
