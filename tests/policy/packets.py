"""Minimal IPv4/IPv6 packets for the firewall tests (headers only as far as the firewall reads them)."""

from __future__ import annotations

import ipaddress
import struct

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def _ip(src: str, dst: str, proto: int, l4: bytes, frag: int = 0) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0, s.packed, d.packed) + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s.packed, d.packed) + l4


def tcp(src: str, dst: str, sport: int, dport: int, flags: int = ACK) -> bytes:
    return _ip(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0))


def udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    return _ip(src, dst, 17, struct.pack("!HHHH", sport, dport, 12, 0) + b"data")


def icmp(src: str, dst: str, kind: int, ident: int = 7, quoted: bytes = b"") -> bytes:
    proto = 1 if ipaddress.ip_address(src).version == 4 else 58
    return _ip(src, dst, proto, struct.pack("!BBHHH", kind, 0, 0, ident, 1) + quoted)


def fragment(packet: bytes, offset_units: int) -> bytes:
    """An IPv4 packet turned into a non-first fragment (offset in 8-byte units)."""
    return packet[:6] + struct.pack("!H", offset_units) + packet[8:]
