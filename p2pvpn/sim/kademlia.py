"""The simulator's Kademlia: the real sans-IO walk (p2pvpn.discovery.walk), and an idealised routing table.

Distances are XOR over SHA-256 of the key, as py-libp2p's KadDHT computes
them: a peer's position is SHA-256 of its peer ID bytes, a value's is
SHA-256 of its DHT key. :class:`Lookup` is the very state machine
Dht.get_address drives over libp2p streams (p2pvpn.discovery.walk); the
simulator (:mod:`p2pvpn.sim.engine`) carries its requests as messages.

:class:`RoutingTable` is *modeled*: a converged table that holds, for each
bucket (the bit length of the XOR distance), up to k peers drawn at random
from all the peers that fall in it — what a long-lived node's table
approaches in a network without churn.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from p2pvpn.discovery.walk import ALPHA, K, DriverError, Lookup

__all__ = ["ALPHA", "K", "DriverError", "Lookup", "RoutingTable", "kad_key"]


CACHE = 300_000  # remembered FIND_NODE answers (RoutingTable.closest), ~80 MB at most


def kad_key(data: bytes) -> int:
    """A key's (or a peer ID's bytes') position in the XOR space."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


class RoutingTable:
    """Every node's converged k-bucket table (modeled), over node indices 0..N-1."""

    def __init__(self, positions: Sequence[int], rng: random.Random, k: int = K) -> None:
        self.positions = list(positions)
        self.k = k
        self.tables: list[list[int]] = []
        self._cache: dict[tuple[int, int], list[int]] = {}
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
        """The ``count`` (k) entries of ``node``'s table closest to ``target``; a FIND_NODE answer.

        The tables never change, and walks toward one key (every publish of
        a record, every provide of "members") ask the same peers again and
        again: answers are remembered (at most CACHE of them, oldest out
        first), which halves a 1,000-node run.
        """
        key = (node, target)
        hit = self._cache.get(key)
        if hit is None:
            positions = self.positions
            hit = sorted(self.tables[node], key=lambda j: positions[j] ^ target)[: self.k]
            if len(self._cache) >= CACHE:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = hit
        return hit[: count or self.k]

    def true_closest(self, target: int, count: int | None = None, exclude: int | None = None) -> list[int]:
        """The globally closest nodes (the reference a lookup is tested against)."""
        nodes = [j for j in range(len(self.positions)) if j != exclude]
        return sorted(nodes, key=lambda j: self.positions[j] ^ target)[: count or self.k]
