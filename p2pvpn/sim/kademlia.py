"""Kademlia's iterative lookup as a sans-IO state machine, and an idealised routing table.

Theory of operation
-------------------
Distances are XOR over SHA-256 of the key, as py-libp2p's KadDHT computes
them (``create_key_from_binary``): a peer's position is SHA-256 of its peer
ID bytes, a value's is SHA-256 of its DHT key.

:class:`Lookup` is the walk of the Kademlia paper (k = 20, alpha = 3)::

    seeds (our k closest) ──> ask the alpha closest not yet asked
          ▲                        │ reply: the peer's k closest to the target
          │                        │        (+ the value, for GET_VALUE)
          └── merge, keep sorted ◄─┘
    done when the value came, or every one of the k closest known peers
    has answered or failed and nothing is in flight.

It never touches a network: :meth:`Lookup.next_requests` says whom to ask,
:meth:`Lookup.on_reply` / :meth:`Lookup.on_failure` feed the answers. The
simulator (:mod:`p2pvpn.sim.engine`) carries the messages; a trio driver
could carry them over libp2p streams the same way.

Hops: a seed is at depth 1, a peer first learned from a reply of a peer at
depth d is at depth d + 1; a lookup's hops are the depth of the peer that
gave the value (GET_VALUE) or the deepest of the k closest it ended with.

:class:`RoutingTable` is *modeled*: a converged table that holds, for each
bucket (the bit length of the XOR distance), up to k peers drawn at random
from all the peers that fall in it — what a long-lived node's table
approaches in a network without churn.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = 20  # bucket size and result size (py-libp2p BUCKET_SIZE)
ALPHA = 3  # requests in flight per lookup

P = TypeVar("P", bound=Hashable)


def kad_key(data: bytes) -> int:
    """A key's (or a peer ID's bytes') position in the XOR space."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


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
    candidates: dict[P, _Candidate] = field(default_factory=dict, init=False)
    found_at: P | None = field(default=None, init=False)
    requests: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for peer in self.seeds:
            self._learn(peer, 1)

    # -- inputs

    def on_reply(self, peer: P, closer: Sequence[P], found: bool = False) -> None:
        """``peer`` answered with its closest peers (and, ``found``, with the value we look for)."""
        cand = self._asked(peer)
        cand.state = "answered"
        if found and self.found_at is None:
            self.found_at = peer
        for other in closer:
            self._learn(other, cand.depth + 1)

    def on_failure(self, peer: P) -> None:
        """``peer`` did not answer (timeout, refused): it drops out of the result."""
        self._asked(peer).state = "failed"
        self.failures += 1

    # -- outputs

    def next_requests(self) -> list[P]:
        """Peers to ask now: the closest not yet asked among the k closest live ones, up to alpha in flight."""
        if self.finished:
            return []
        in_flight = sum(1 for c in self.candidates.values() if c.state == "asked")
        out: list[P] = []
        for peer, cand in self._closest_live():
            if in_flight + len(out) >= self.alpha:
                break
            if cand.state == "new":
                out.append(peer)
        for peer in out:
            self.candidates[peer].state = "asked"
        self.requests += len(out)
        return out

    @property
    def finished(self) -> bool:
        if self.found_at is not None:
            return True
        live = self._closest_live()
        return all(c.state == "answered" for _, c in live) and not any(
            c.state == "asked" for c in self.candidates.values()
        )

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


class RoutingTable:
    """Every node's converged k-bucket table (modeled), over node indices 0..N-1."""

    def __init__(self, positions: Sequence[int], rng: random.Random, k: int = K) -> None:
        self.positions = list(positions)
        self.k = k
        self.tables: list[list[int]] = []
        n = len(self.positions)
        for i, mine in enumerate(self.positions):
            buckets: dict[int, list[int]] = {}
            for j in range(n):
                if j != i:
                    buckets.setdefault((mine ^ self.positions[j]).bit_length(), []).append(j)
            entries: list[int] = []
            for members in buckets.values():
                entries += members if len(members) <= k else rng.sample(members, k)
            self.tables.append(entries)

    def closest(self, node: int, target: int, count: int | None = None) -> list[int]:
        """The ``count`` (k) entries of ``node``'s table closest to ``target``; a FIND_NODE answer."""
        entries = self.tables[node]
        return sorted(entries, key=lambda j: self.positions[j] ^ target)[: count or self.k]

    def true_closest(self, target: int, count: int | None = None, exclude: int | None = None) -> list[int]:
        """The globally closest nodes (the reference a lookup is tested against)."""
        nodes = [j for j in range(len(self.positions)) if j != exclude]
        return sorted(nodes, key=lambda j: self.positions[j] ^ target)[: count or self.k]
