"""One table answers both routing questions, like WireGuard's allowed-IPs.

Outbound: which peer gets a packet for this destination? Inbound: may the
peer that sent this packet use this source address? Using the same table for
both is what makes anti-spoofing hold: a peer can only ever send from the
addresses we would route to it.

A client using an exit also has a *default* peer (WireGuard's AllowedIPs
``0.0.0.0/0, ::/0`` for that one peer): destinations outside the overlay
go to it, and only it may send packets from outside sources. Overlay
addresses never fall through to the default: an unknown overlay address
is a missing peer, not a destination on the internet.
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
        self._default: PeerKey | None = None
        self._v6_overlay = b""  # first 8 bytes of the network's ULA /64, set with the default

    def set_default(self, peer: PeerKey | None, v6_overlay_prefix: bytes = b"") -> None:
        """Send non-overlay destinations to ``peer`` (None: nowhere) and accept any non-overlay source from it.

        ``v6_overlay_prefix``: the 8 bytes of the network's ULA /64 (the IPv4
        overlay is always 100.64.0.0/10).
        """
        if peer is not None and len(v6_overlay_prefix) != 8:
            raise ValueError("the overlay's IPv6 /64 prefix must be 8 bytes")
        self._default = peer
        self._v6_overlay = v6_overlay_prefix or self._v6_overlay  # kept for in_overlay when the default goes

    @property
    def default(self) -> PeerKey | None:
        return self._default

    def in_overlay(self, address: bytes) -> bool:
        """Whether ``address`` lies in the overlay (100.64.0.0/10, or the network's /64 once it is set)."""
        if len(address) == 4:
            return not self._outside(address)
        return len(address) == 16 and bool(self._v6_overlay) and address[:8] == self._v6_overlay

    def set_v6_overlay(self, prefix: bytes) -> None:
        """The 8 bytes of the network's ULA /64, so ``in_overlay`` knows IPv6 overlay addresses without a default."""
        if len(prefix) != 8:
            raise ValueError("the overlay's IPv6 /64 prefix must be 8 bytes")
        self._v6_overlay = prefix

    def _outside(self, address: bytes) -> bool:
        if len(address) == 4:
            return not (address[0] == 100 and address[1] & 0xC0 == 64)  # 100.64.0.0/10
        return address[:8] != self._v6_overlay

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
        peer = self._routes.get(destination)
        if peer is None and self._default is not None and self._outside(destination):
            return self._default
        return peer

    def source_allowed(self, peer: PeerKey, source: bytes) -> bool:
        """True only if ``source`` is an address we would route to ``peer``."""
        owner = self._routes.get(source)
        if owner is not None:
            return owner == peer
        return self._default is not None and peer == self._default and self._outside(source)

    def addresses(self, peer: PeerKey) -> tuple[bytes, ...]:
        return self._by_peer.get(peer, ())

    def __len__(self) -> int:
        return len(self._routes)
