"""What the firewall needs of a packet: protocol, addresses, ports, TCP flags (docs/protocol.md §17.5).

``parse`` reads an IPv4 or IPv6 header (IPv6 extension headers skipped, at
most 4) and the first bytes of TCP, UDP, ICMP or ICMPv6. ICMP echo requests
and replies carry their identifier as a port (request: source port, reply:
destination port) so a reply finds its request's flow. ICMP errors carry
the flow of the packet they quote (``inner``), which they are related to.
A non-first fragment has no ports (``sport``/``dport`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
ECHO_REQUEST = 0x100  # in Flow.flags of ICMP: an echo request, which may open a flow (no TCP flag is this high)
_V6_SKIP = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_V6_FRAGMENT = 44
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
_ICMPV6_ERRORS = frozenset((1, 2, 3, 4))
_ECHO_REQUEST = {ICMP: 8, ICMPV6: 128}
_ECHO_REPLY = {ICMP: 0, ICMPV6: 129}


@dataclass(frozen=True, slots=True)
class Flow:
    proto: int
    src: bytes
    dst: bytes
    sport: int | None
    dport: int | None
    flags: int = 0
    """TCP flags; ECHO_REQUEST for an ICMP echo request; 0 otherwise."""
    inner: Flow | None = None
    """For an ICMP error: the quoted packet's flow, as the packet's sender saw it (we sent it)."""


def parse(packet: bytes | memoryview, offset: int = 0, _quoted: bool = False) -> Flow | None:
    """The flow of an IP packet starting at ``offset``, or None when its headers are cut short or unknown."""
    if len(packet) < offset + 20:
        return None
    version = packet[offset] >> 4
    if version == 4:
        ihl = (packet[offset] & 0x0F) * 4
        if ihl < 20:
            return None
        proto = packet[offset + 9]
        src = bytes(packet[offset + 12:offset + 16])
        dst = bytes(packet[offset + 16:offset + 20])
        fragment_offset = int.from_bytes(packet[offset + 6:offset + 8], "big") & 0x1FFF
        start = offset + ihl
    elif version == 6:
        if len(packet) < offset + 40:
            return None
        proto = packet[offset + 6]
        src = bytes(packet[offset + 8:offset + 24])
        dst = bytes(packet[offset + 24:offset + 40])
        fragment_offset = 0
        start = offset + 40
        for _ in range(4):
            if proto in _V6_SKIP:
                if len(packet) < start + 2:
                    return None
                proto, start = packet[start], start + (packet[start + 1] + 1) * 8
            elif proto == _V6_FRAGMENT:
                if len(packet) < start + 8:
                    return None
                fragment_offset = int.from_bytes(packet[start + 2:start + 4], "big") >> 3
                proto, start = packet[start], start + 8
            else:
                break
    else:
        return None
    if fragment_offset:
        return Flow(proto, src, dst, None, None)
    if proto in (TCP, UDP):
        # A quoted packet (in an ICMP error) may be cut after its first 8 bytes of transport header.
        if len(packet) < start + (14 if proto == TCP and not _quoted else 4):
            return None
        sport = int.from_bytes(packet[start:start + 2], "big")
        dport = int.from_bytes(packet[start + 2:start + 4], "big")
        flags = packet[start + 13] if proto == TCP and len(packet) >= start + 14 else 0
        return Flow(proto, src, dst, sport, dport, flags)
    if proto in (ICMP, ICMPV6):
        if len(packet) < start + 8:
            return None
        kind = packet[start]
        ident = int.from_bytes(packet[start + 4:start + 6], "big")
        if kind == _ECHO_REQUEST[proto]:
            return Flow(proto, src, dst, ident, 0, ECHO_REQUEST)
        if kind == _ECHO_REPLY[proto]:
            return Flow(proto, src, dst, 0, ident)
        if not _quoted and kind in (_ICMP_ERRORS if proto == ICMP else _ICMPV6_ERRORS):
            return Flow(proto, src, dst, 0, 0, inner=parse(packet, start + 8, _quoted=True))
        return Flow(proto, src, dst, 0, 0)
    return Flow(proto, src, dst, 0, 0)
