"""IPv4 fragmentation (RFC 791 §3.2), sans-IO: a packet too big for the peer's MTU, cut to fit.

Why here: a router must fragment an IPv4 packet without DF that exceeds
the next hop's MTU; dropping it silently (what we did) black-holes, for
example, the kernel's own ping replies until it has learnt the path MTU
from some DF packet. Packets with DF get ICMP "fragmentation needed"
instead (p2pvpn.dataplane.icmp), IPv6 is never fragmented on the path.

Rules (docs/protocol.md §7.3):
1. Only IPv4 without DF, with a sane header (IHL >= 5, total length
   within the buffer and at least the header) is cut; anything else
   returns None and the caller treats the packet as too big.
2. Each fragment's data is a multiple of 8 bytes except the last, and each
   fragment (header + data) is at most ``mtu`` bytes.
3. The first fragment keeps every option; the others carry only options
   whose "copied" bit (0x80) is set, padded to a 4-byte multiple.
4. Fragment offsets add to the packet's own offset, and the last fragment
   keeps the packet's own MF bit (a fragment can be fragmented again).
5. Identification, TOS, TTL, protocol and addresses are kept; total
   length, flags/offset and the header checksum are recomputed.
"""

from __future__ import annotations

import struct

from p2pvpn.dataplane.packet import checksum

IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF
MIN_HEADER = 20
MIN_MTU = 68  # RFC 791: every IPv4 module must forward a 68-byte datagram without further fragmentation


def needs_df(packet: bytes) -> bool:
    """Whether ``packet`` is IPv4 with DF set (so too big means ICMP, not fragmentation)."""
    return len(packet) >= MIN_HEADER and packet[0] >> 4 == 4 and bool(struct.unpack_from("!H", packet, 6)[0] & IP_DF)


def fragment_ipv4(packet: bytes, mtu: int) -> list[bytes] | None:
    """``packet`` as fragments of at most ``mtu`` bytes each, or None if it must not or cannot be cut."""
    if len(packet) < MIN_HEADER or packet[0] >> 4 != 4 or mtu < MIN_MTU:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total, flags_offset = struct.unpack_from("!H2xH", packet, 2)
    if ihl < MIN_HEADER or total < ihl or total > len(packet) or flags_offset & IP_DF:
        return None
    if total <= mtu:
        return [packet[:total]]
    header, data = packet[:ihl], packet[ihl:total]
    later_header = header[:MIN_HEADER] + _copied_options(header[MIN_HEADER:])
    own_offset = flags_offset & IP_OFFSET_MASK
    own_mf = flags_offset & IP_MF
    fragments: list[bytes] = []
    position = 0
    while position < len(data):
        head = header if not fragments else later_header
        room = (mtu - len(head)) // 8 * 8
        if room <= 0:
            return None
        chunk = data[position : position + room]
        last = position + len(chunk) >= len(data)
        flags = (own_offset + position // 8) | (own_mf if last else IP_MF)
        fragments.append(_header(head, len(head) + len(chunk), flags) + chunk)
        position += len(chunk)
    return fragments


def _header(template: bytes, total: int, flags_offset: int) -> bytes:
    """``template`` with IHL, total length, flags/offset set and a fresh checksum."""
    header = bytearray(template)
    header[0] = 0x40 | (len(template) // 4)
    struct.pack_into("!H", header, 2, total)
    struct.pack_into("!H", header, 6, flags_offset)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header)


def _copied_options(options: bytes) -> bytes:
    """The options that go into every fragment (copied bit set), padded with End-of-Options to 4 bytes."""
    kept = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # End of Option List
            break
        if kind == 1:  # No Operation, a single byte, not copied
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break  # malformed length: copy nothing further (the first fragment keeps the originals)
        length = options[i + 1]
        if kind & 0x80:
            kept += options[i : i + length]
        i += length
    kept += b"\x00" * (-len(kept) % 4)
    return bytes(kept)
