"""Just enough IP header parsing for routing and anti-spoofing.

Addresses are returned as packed bytes (4 or 16 long) because the route table
is keyed by them: no ``ipaddress`` objects on the hot path.
"""

from __future__ import annotations


def destination(packet: bytes) -> bytes | None:
    """Packed destination address, or None if this is not a plausible IP packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return None


def source(packet: bytes) -> bytes | None:
    """Packed source address, or None if this is not a plausible IP packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[12:16]
    if version == 6 and len(packet) >= 40:
        return packet[8:24]
    return None
