"""Just enough IP header parsing for routing and anti-spoofing.

Addresses are returned as packed bytes (4 or 16 long) because the route table
is keyed by them: no ``ipaddress`` objects on the hot path. ``offset`` is
where the IP packet starts: 0 for a plain packet, 10 for an offload record
(virtio-net header first), so records are never sliced just to be routed.
"""

from __future__ import annotations

import struct


def destination(packet: bytes, offset: int = 0) -> bytes | None:
    """Packed destination address, or None if this is not a plausible IP packet."""
    if len(packet) <= offset:
        return None
    version = packet[offset] >> 4
    if version == 4 and len(packet) >= offset + 20:
        return packet[offset + 16 : offset + 20]
    if version == 6 and len(packet) >= offset + 40:
        return packet[offset + 24 : offset + 40]
    return None


def source(packet: bytes, offset: int = 0) -> bytes | None:
    """Packed source address, or None if this is not a plausible IP packet."""
    if len(packet) <= offset:
        return None
    version = packet[offset] >> 4
    if version == 4 and len(packet) >= offset + 20:
        return packet[offset + 12 : offset + 16]
    if version == 6 and len(packet) >= offset + 40:
        return packet[offset + 8 : offset + 24]
    return None


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``; 0 when ``data`` includes a correct checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
