"""The DHT decisions of discovery, without I/O: whom an address lookup asks first, when we publish again, what we provide.

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
* At 50 nodes started within a minute, every node's early republishes
  (EARLY_REPUBLISH after its own publish) fell into the same seconds, and
  the first pairs of the reach phase waited behind 50 publishes (a walk
  and ~20 PUT_VALUEs per key each). :class:`PublishSchedule` therefore
  draws each early gap from ``[gap * (1 - EARLY_JITTER), gap * (1 +
  EARLY_JITTER)]`` (same mean, same count) and each period from
  ``[period * (1 - PERIOD_JITTER), period]`` (never later: records expire
  after TTL = 2 periods).
* :func:`provided_roles`: a member provides "members" only in full-mesh
  mode. On demand nothing reads that key (a first packet looks up the
  address key, docs/protocol.md §18), and at N nodes the 20 peers closest
  to it served N ADD_PROVIDERs per period (the simulation's busiest node).
* The peers we hold connections to are one round trip away (no dial, no
  walk), and where a young table put the records is exactly there (the
  bootstrap peers, the first peers met). :func:`first_asks` adds the
  connected peers closest to the key to the closest peers of our table, a
  bounded number of each, for the lookup's first round.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

P = TypeVar("P", bound=Hashable)

# A node publishes first when its routing table holds little more than its bootstrap peers, so its record
# (and its address records, §18.2) land on whichever peers it knew then. So it stores them again a few times
# after the start (each gap counted from the end of the publish before): a fixed number of puts per node.
EARLY_REPUBLISH = (10.0, 30.0, 90.0, 270.0)
EARLY_JITTER = 0.5    # each early gap drawn in gap * [1 - this, 1 + this]: 50 nodes' republishes spread out
PERIOD_JITTER = 0.1   # each later gap drawn in period * [1 - this, 1]: never later than the period (TTL / 2)
ADDRESS_FIRST_ASK = 3      # closest peers of our own table asked at once for an address key (Dht.get_address)
ADDRESS_CONNECTED_ASK = 5  # connected DHT servers asked too in that first round (first_asks)
GROW_FACTOR = 2.0   # the table has at least doubled since the last publish ...
GROW_MIN = 4        # ... by at least this many peers (3 -> 6 is not yet "grown"; 3 -> 7 is) ...
GROW_BY = 16        # ... or has gained this many peers, whatever its size
GROW_GAP = 10.0     # seconds between two publishes the growth asks for, at least
MESH_LOOKUPS = 8          # full mesh: address lookups for unknown destinations at once, at most (MissGate)
MESH_NEGATIVE_TTL = 5.0   # ... and none for a destination whose lookup found nothing this long ago


def provided_roles(member: bool, on_demand: bool, offered: Iterable[str] = ()) -> list[str]:
    """The provider keys a node announces (docs/protocol.md §12.2): "members" only for a full-mesh member.

    Full-mesh nodes read "members" to find every member, so they provide it;
    an on-demand member finds others by their address records and is found
    by its own (§18.2), so it does not: at N nodes each provide of the one
    key cost the 20 peers closest to it N ADD_PROVIDERs per period. A
    full-mesh node reaches an on-demand member by an address lookup on its
    first packet (p2pvpn.discovery.mesh_lookups). ``offered``: the roles of
    our record ("relay", "exit"), provided in both modes (exit selection
    reads "exit").
    """
    roles = ["members"] if member and not on_demand else []
    return roles + [r for r in dict.fromkeys(offered) if r != "members"]


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
    1.3 s instead of 0.23 s). Each gap is drawn at random around its
    value (EARLY_JITTER, PERIOD_JITTER; ``rng`` seeded in tests and in the
    simulation), so nodes started together do not republish together.
    ``grown`` says whether the table has grown
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
    early_jitter: float = EARLY_JITTER
    period_jitter: float = PERIOD_JITTER
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_gap(self) -> float:
        """The wait after the publish that just ended: the next early gap or the period, each drawn at random."""
        gap = self.early[self.count] if self.count < len(self.early) else self.period
        if gap >= self.period:  # a period (or an early gap the period caps): drawn below it, records never lapse
            return self.period * self.rng.uniform(1 - self.period_jitter, 1)
        return min(gap * self.rng.uniform(1 - self.early_jitter, 1 + self.early_jitter), self.period)

    def published(self, now: float, table_size: int) -> None:
        """A publish ended at ``now`` with a table of ``table_size`` peers: the next timer is set from it."""
        gap = self.next_gap()
        self.count += 1
        self.last_at = now
        self.last_size = table_size
        self.timer_at = now + gap

    def grown(self, now: float, table_size: int) -> bool:
        """Whether the table grew enough since the last publish to store our records again now."""
        if self.last_at is None or now - self.last_at < self.min_gap:
            return False
        gained = table_size - self.last_size
        doubled = table_size >= self.last_size * self.grow_factor and gained >= self.grow_min
        return doubled or gained >= self.grow_by


@dataclass
class MissGate:
    """Whether a full-mesh node's packet to an unknown overlay address starts an address lookup.

    One lookup per destination at a time, at most ``limit`` at once, and
    none for ``negative_ttl`` s after one found nothing (no lookup storm for
    an address nobody holds: each packet of a flood would start a walk).
    What it remembers is bounded: ``failed`` keeps at most ``limit * 64``
    destinations, the oldest forgotten first.
    """

    limit: int = MESH_LOOKUPS
    negative_ttl: float = MESH_NEGATIVE_TTL
    running: set[bytes] = field(default_factory=set)
    failed: dict[bytes, float] = field(default_factory=dict)  # destination -> when its lookup found nothing

    def start(self, destination: bytes, now: float) -> bool:
        """True: start a lookup for ``destination`` now (it counts as running until ``ended``)."""
        if destination in self.running or len(self.running) >= self.limit:
            return False
        failed_at = self.failed.get(destination)
        if failed_at is not None and now - failed_at < self.negative_ttl:
            return False
        self.failed.pop(destination, None)
        self.running.add(destination)
        return True

    def ended(self, destination: bytes, now: float, found: bool) -> None:
        """The lookup for ``destination`` ended; without a record the destination waits ``negative_ttl``."""
        self.running.discard(destination)
        if not found:
            self.failed[destination] = now
            while len(self.failed) > self.limit * 64:
                del self.failed[next(iter(self.failed))]
