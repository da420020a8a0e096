"""Build small, valid IPv4/IPv6 packets for tests (UDP inside, checksums correct)."""

from __future__ import annotations

import ipaddress
import struct

from p2pvpn.dataplane.packet import checksum as _checksum


def udp4(src: str, dst: str, payload: bytes, sport: int = 4000, dport: int = 5000) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def udp6(src: str, dst: str, payload: bytes, sport: int = 4000, dport: int = 5000) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!I3xB", udp_len, 17)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, s, d)
    return header + udp
