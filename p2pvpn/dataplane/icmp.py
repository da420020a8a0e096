"""ICMP "packet too big" for packets over a peer's MTU (sans-IO).

When peers announce different MTUs, the local TUN accepts packets that the
peer's side cannot take. Dropping them silently makes a path-MTU black
hole: TCP with DF set retransmits the same segment forever. A router
answers with ICMPv4 "fragmentation needed" (RFC 792/1191) or ICMPv6
"packet too big" (RFC 4443), and the sender's kernel lowers its path MTU;
the node does the same, as the router behind its TUN. The error comes
"from" the packet's destination (its overlay address, as Tailscale does):
the node's own address would be a martian source on its own TUN and the
kernel would drop it. Never in answer to an ICMP error (no error storms), never for an
IPv4 packet that may be fragmented (no DF: the kernel fragments, or it
is dropped and counted), and at most a few per second (:class:`TokenBucket`).
"""

from __future__ import annotations

import struct

from p2pvpn.dataplane.packet import checksum as _checksum

IPV4_MIN_MTU = 68
IPV6_MIN_MTU = 1280
_V4_QUOTE = 576 - 20 - 8   # RFC 1812 4.3.2.3: quote as much as fits a 576-byte datagram
_V6_QUOTE = IPV6_MIN_MTU - 40 - 8  # RFC 4443 2.4(c): as much as fits the minimum MTU
_ICMP_V4, _ICMP_V6 = 1, 58
_V4_ERRORS = {3, 4, 5, 11, 12}  # ICMPv4 error types (unreachable, quench, redirect, time exceeded, parameter)
_TTL = 64


def too_big_reply(packet: bytes, mtu: int) -> bytes | None:
    """The ICMP error telling ``packet``'s sender that ``mtu`` is the limit, or None if none is due."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _v4(packet, mtu)
    if version == 6:
        return _v6(packet, mtu)
    return None


def _v4(packet: bytes, mtu: int) -> bytes | None:
    if len(packet) < 20:
        return None
    source = packet[16:20]
    ihl = (packet[0] & 0x0F) * 4
    flags_fragment = struct.unpack_from("!H", packet, 6)[0]
    dont_fragment = bool(flags_fragment & 0x4000)
    first_fragment = flags_fragment & 0x1FFF == 0
    if ihl < 20 or len(packet) < ihl or not dont_fragment or not first_fragment:
        return None
    if packet[9] == _ICMP_V4 and len(packet) > ihl and packet[ihl] in _V4_ERRORS:
        return None
    if packet[12] == 0 or packet[12] >= 224:  # from 0.0.0.0/8, multicast or reserved: nobody to tell
        return None
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, max(IPV4_MIN_MTU, min(mtu, 0xFFFF))) + packet[:_V4_QUOTE]
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, _TTL, _ICMP_V4, 0, source, packet[12:16])
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def _v6(packet: bytes, mtu: int) -> bytes | None:
    if len(packet) < 40:
        return None
    source = packet[24:40]
    if packet[6] == _ICMP_V6 and len(packet) > 40 and packet[40] < 128:  # an ICMPv6 error (types 0-127)
        return None
    destination = packet[8:24]  # the original source
    if destination[0] == 0xFF or destination == bytes(16):  # multicast or unspecified: nobody to tell
        return None
    icmp = struct.pack("!BBHI", 2, 0, 0, max(IPV6_MIN_MTU, mtu)) + packet[:_V6_QUOTE]
    pseudo = source + destination + struct.pack("!I3xB", len(icmp), _ICMP_V6)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), _ICMP_V6, _TTL, source, destination)
    return header + icmp


class TokenBucket:
    """At most ``rate`` per second on average, ``burst`` at once; the caller passes the time."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def unreachable_reply(packet: bytes) -> bytes | None:
    """ICMP "host unreachable" (v4 type 3 code 1; v6 type 1 code 3) for a packet no member could take.

    For an on-demand destination whose lookup or dial failed (p2pvpn.session.ondemand): the sender's
    socket fails at once (EHOSTUNREACH) instead of waiting out its own timeouts. Same rules as
    ``too_big_reply``: never for an ICMP error, never to nobody; comes "from" the destination.
    """
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl or struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
            return None
        if packet[9] == _ICMP_V4 and len(packet) > ihl and packet[ihl] in _V4_ERRORS:
            return None
        if packet[12] == 0 or packet[12] >= 224:
            return None
        icmp = struct.pack("!BBHI", 3, 1, 0, 0) + packet[:_V4_QUOTE]
        icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, _TTL, _ICMP_V4, 0, packet[16:20],
                             packet[12:16])
        return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + icmp
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        if packet[6] == _ICMP_V6 and len(packet) > 40 and packet[40] < 128:
            return None
        source, destination = packet[24:40], packet[8:24]
        if destination[0] == 0xFF or destination == bytes(16):
            return None
        icmp = struct.pack("!BBHI", 1, 3, 0, 0) + packet[:_V6_QUOTE]
        pseudo = source + destination + struct.pack("!I3xB", len(icmp), _ICMP_V6)
        icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
        return struct.pack("!IHBB16s16s", 0x60000000, len(icmp), _ICMP_V6, _TTL, source, destination) + icmp
    return None
