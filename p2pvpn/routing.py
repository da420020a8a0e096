"""One table answers both routing questions, like WireGuard's allowed-IPs.

Outbound: which peer gets a packet for this destination? Inbound: may the
peer that sent this packet use this source address? Using the same table for
both is what makes anti-spoofing hold: a peer can only ever send from the
addresses we would route to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

PeerKey = TypeVar("PeerKey", bound=Hashable)


class RouteTable(Generic[PeerKey]):
    """Exact overlay-address routes (packed bytes -> peer)."""

    def __init__(self) -> None:
        self._routes: dict[bytes, PeerKey] = {}
        self._by_peer: dict[PeerKey, tuple[bytes, ...]] = {}

    def set_peer(self, peer: PeerKey, addresses: Iterable[bytes]) -> None:
        """Route ``addresses`` to ``peer``, replacing the peer's previous addresses."""
        self.remove_peer(peer)
        addrs = tuple(addresses)
        for addr in addrs:
            if len(addr) not in (4, 16):
                raise ValueError(f"not a packed IP address: {addr!r}")
            owner = self._routes.get(addr)
            if owner is not None and owner != peer:
                raise ValueError(f"address {addr.hex()} already routed to another peer")
        for addr in addrs:
            self._routes[addr] = peer
        self._by_peer[peer] = addrs

    def remove_peer(self, peer: PeerKey) -> None:
        for addr in self._by_peer.pop(peer, ()):
            self._routes.pop(addr, None)

    def lookup(self, destination: bytes) -> PeerKey | None:
        return self._routes.get(destination)

    def source_allowed(self, peer: PeerKey, source: bytes) -> bool:
        """True only if ``source`` is an address we would route to ``peer``."""
        return self._routes.get(source) == peer

    def addresses(self, peer: PeerKey) -> tuple[bytes, ...]:
        return self._by_peer.get(peer, ())

    def __len__(self) -> int:
        return len(self._routes)
