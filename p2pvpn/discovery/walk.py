"""Kademlia's iterative lookup as a sans-IO state machine: whom to ask next, and when to stop.

Theory of operation
-------------------
Distances are XOR over SHA-256 of the key, as py-libp2p's KadDHT computes
them (``create_key_from_binary``): a peer's position is SHA-256 of its peer
ID bytes, a value's is SHA-256 of its DHT key.

:class:`Lookup` is the walk of the Kademlia paper and of go-libp2p-kad-dht's
``GetValue`` (k = 20, alpha = 3)::

    seeds (our k closest) ──> ask the alpha closest not yet asked
          ▲                        │ reply: the peer's k closest to the target
          │                        │        (+ the value, for GET_VALUE)
          └── merge, keep sorted ◄─┘
    done when a valid value came, or every one of the k closest known
    peers has answered or failed and nothing is in flight, or
    ``max_requests`` requests were made and nothing is in flight.

Rules: a peer is asked at most once; at most ``alpha`` requests are in
flight, except for a first round of chosen peers (:meth:`Lookup.ask_first`,
Dht.get_address's one round trip to peers it already holds connections to),
whose slow ones stop counting once the driver says so
(:meth:`Lookup.release_first`);
an invalid value counts (``invalid``) and is otherwise a reply without
value. A failed peer drops out of the k closest, so the next one moves in.

It never touches a network: :meth:`Lookup.next_requests` says whom to ask,
:meth:`Lookup.on_reply` / :meth:`Lookup.on_failure` feed the answers. Dht
(p2pvpn.discovery.dht) carries them over libp2p streams; the simulator
(p2pvpn.sim) carries them as messages.

Hops: a seed is at depth 1, a peer first learned from a reply of a peer at
depth d is at depth d + 1; a lookup's hops are the depth of the peer that
gave the value (GET_VALUE) or the deepest of the k closest it ended with.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = 20  # bucket size and result size (py-libp2p BUCKET_SIZE)
ALPHA = 3  # requests in flight per lookup
MAX_REQUESTS = 3 * K  # requests per lookup at most (a full FIND_NODE walk + GET_VALUE to k peers is ~2k)

P = TypeVar("P", bound=Hashable)


class DriverError(Exception):
    """A caller fed the lookup something it did not ask for (a bug in the driver, not the network)."""


@dataclass
class _Candidate:
    distance: int
    depth: int
    state: str = "new"  # new, asked, answered, failed


@dataclass
class Lookup(Generic[P]):
    """One iterative lookup toward ``target``; peers are any hashable handle, positioned by ``position``."""

    target: int
    position: Callable[[P], int]
    seeds: Iterable[P]
    k: int = K
    alpha: int = ALPHA
    exclude: P | None = None  # ourselves
    max_requests: int = MAX_REQUESTS
    candidates: dict[P, _Candidate] = field(default_factory=dict, init=False)
    found_at: P | None = field(default=None, init=False)
    requests: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    invalid: int = field(default=0, init=False)  # replies whose value the validator refused
    late: int = field(default=0, init=False)  # answers of peers already counted failed (on_late_reply)
    _first: set[P] = field(default_factory=set, init=False)  # asked by ask_first
    _released: set[P] = field(default_factory=set, init=False)  # first-round peers no longer counted against alpha

    def __post_init__(self) -> None:
        for peer in self.seeds:
            self._learn(peer, 1)

    # -- inputs

    def ask_first(self, peers: Iterable[P]) -> list[P]:
        """Ask these peers now, whatever alpha says (a first round of chosen peers); returns those not asked before."""
        out: list[P] = []
        for peer in dict.fromkeys(peers):
            if peer == self.exclude or self.finished or self.requests >= self.max_requests:
                continue
            self._learn(peer, 1)
            cand = self.candidates[peer]
            if cand.state == "new":
                cand.state = "asked"
                self.requests += 1
                self._first.add(peer)
                out.append(peer)
        return out

    def release_first(self) -> None:
        """The first round's peers still in flight stop counting against alpha: the walk goes on without them.

        For a driver whose first round had its time (Dht: ADDRESS_FIRST_WAIT):
        eight slow connections must not hold the walk until each times out.
        Their answers are still taken.
        """
        self._released = {p for p in self._first if self.candidates[p].state == "asked"}

    def on_reply(self, peer: P, closer: Sequence[P], found: bool = False, invalid: bool = False) -> None:
        """``peer`` answered with its closest peers and, ``found``, with a valid value (``invalid``: a refused one)."""
        cand = self._asked(peer)
        cand.state = "answered"
        if invalid:
            self.invalid += 1
        if found and self.found_at is None:
            self.found_at = peer
        for other in closer:
            self._learn(other, cand.depth + 1)

    def on_late_reply(self, peer: P, closer: Sequence[P], found: bool = False, invalid: bool = False) -> None:
        """A peer given up on (``on_failure``: silent too long) answered after all: as ``on_reply``.

        Its value counts and its closer peers are learned; it is live again
        (``answered``). ``failures`` keeps counting it; ``late`` counts these.
        """
        cand = self.candidates.get(peer)
        if cand is None or cand.state != "failed":
            raise DriverError(f"a late answer from {peer!r}, which this lookup did not give up on")
        cand.state = "asked"
        self.late += 1
        self.on_reply(peer, closer, found=found, invalid=invalid)

    def gave_up_on(self, peer: P) -> bool:
        """Whether ``peer`` was asked and then counted failed (its answer, if any, is late)."""
        cand = self.candidates.get(peer)
        return cand is not None and cand.state == "failed"

    def on_failure(self, peer: P) -> None:
        """``peer`` did not answer (timeout, refused): it drops out of the result."""
        self._asked(peer).state = "failed"
        self.failures += 1

    # -- outputs

    def next_requests(self) -> list[P]:
        """Peers to ask now: the closest not yet asked among the k closest live ones, up to alpha in flight."""
        if self.finished:
            return []
        in_flight = sum(1 for p, c in self.candidates.items() if c.state == "asked" and p not in self._released)
        out: list[P] = []
        for peer, cand in self._closest_live():
            if in_flight + len(out) >= self.alpha or self.requests + len(out) >= self.max_requests:
                break
            if cand.state == "new":
                out.append(peer)
        for peer in out:
            self.candidates[peer].state = "asked"
        self.requests += len(out)
        return out

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self.candidates.values() if c.state == "asked")

    @property
    def finished(self) -> bool:
        """A value was found; or nothing is in flight and nothing is left to ask (k closest done, or the bound)."""
        if self.found_at is not None:
            return True
        if self.in_flight:
            return False
        if self.requests >= self.max_requests:
            return True
        return all(c.state == "answered" for _, c in self._closest_live())

    def result(self) -> list[P]:
        """The k closest peers that answered, closest first."""
        answered = [(c.distance, i, p) for i, (p, c) in enumerate(self.candidates.items()) if c.state == "answered"]
        return [p for _, _, p in sorted(answered, key=lambda t: (t[0], t[1]))[: self.k]]

    @property
    def hops(self) -> int:
        if self.found_at is not None:
            return self.candidates[self.found_at].depth
        return max((self.candidates[p].depth for p in self.result()), default=0)

    # -- internals

    def _learn(self, peer: P, depth: int) -> None:
        if peer == self.exclude:
            return
        cand = self.candidates.get(peer)
        if cand is None:
            self.candidates[peer] = _Candidate(self.position(peer) ^ self.target, depth)
        elif depth < cand.depth:
            cand.depth = depth

    def _asked(self, peer: P) -> _Candidate:
        cand = self.candidates.get(peer)
        if cand is None or cand.state != "asked":
            raise DriverError(f"an answer from {peer!r}, which this lookup did not ask")
        return cand

    def _closest_live(self) -> list[tuple[P, _Candidate]]:
        live = [(p, c) for p, c in self.candidates.items() if c.state != "failed"]
        live.sort(key=lambda pc: pc[1].distance)
        return live[: self.k]
