"""Which destinations a peer may send us: the ingress destination check, as a plain policy object.

A member's packet is written to our TUN only if it is addressed to us
(our overlay IPv4 or IPv6) or to a destination we serve for it. The only
such service today is the exit role: with it on, any destination outside
the overlay (the exit's nft policy then decides what actually leaves, and
its input chain keeps the exit host itself out of reach). Anything else
(another member's overlay address, our LAN, our underlay address,
multicast) is dropped as ``bad_destination``: without this check every
member could reach every address the kernel routes for us.
"""

from __future__ import annotations

from p2pvpn.addressing import OverlayAddresses, network_v6_prefix


class LocalDestinations:
    """``allowed(destination)`` for packed destination addresses (4 or 16 bytes), hot-path cheap."""

    def __init__(self, local: OverlayAddresses, network: str, exit_role: bool = False) -> None:
        self.exit_role = exit_role
        self._v6_overlay = network_v6_prefix(network).network_address.packed[:8]  # the network's /64
        self.set_local(local)

    def set_local(self, local: OverlayAddresses) -> None:
        """Our overlay addresses changed (collision move)."""
        self._ours = (local.ipv4.packed, local.ipv6.packed)

    def allowed(self, destination: bytes) -> bool:
        if destination in self._ours:
            return True
        if not self.exit_role:
            return False
        if len(destination) == 4:
            return not (destination[0] == 100 and destination[1] & 0xC0 == 64)  # outside 100.64.0.0/10
        return destination[:8] != self._v6_overlay
