"""Receive coalescing (GRO in userspace), sans-IO: consecutive TCP segments -> one TSO record.

Why: over the datagram path each IP packet arrives alone, and writing it to
the TUN costs a trip through the kernel's TCP input per 1400 bytes; py-spy
put ~45 % of the receiving node's busy time in those writes. An offload TUN
takes a 64 KiB super-packet instead (docs/protocol.md §5.3.1), as the
kernel's own GRO would have built it; wireguard-go and Tailscale do the same.

Theory of operation: walk the packets in order; a packet joins the group
before it when it continues the same TCP flow exactly as the kernel's
segmentation would have cut it (same addresses, ports, ack, window, options,
IPv4 ID +1, sequence right after, every earlier segment the same size and
flagged ACK only, PSH allowed on the last). A group of two or more becomes
one record: the first segment's headers with the lengths fixed, the
payloads concatenated, and a ``NEEDS_CSUM`` virtio-net header whose TCP
checksum field holds the pseudo-header sum, which is the kernel's
convention (``p2pvpn.dataplane.offload.segment`` cuts it back into exactly
the packets it came from; a test checks that). Everything else passes as a
plain record (zero header). Pure: bytes in, records out.
"""

from __future__ import annotations

import struct

from p2pvpn.dataplane.offload import (
    F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, IPPROTO_TCP, TCP_CSUM_OFFSET, ZERO_VNET_HDR, _sum16,
)

_HDR = struct.Struct("<BBHHHH")
_ACK, _PSH_ACK = 0x10, 0x18
MAX_RECORD = 65535  # IP length of one super-packet


def _tcp_layout(packet: bytes) -> tuple[int, int, int] | None:
    """(IP header length, TCP header length, payload length) of a plain TCP segment we may coalesce, or None."""
    size = len(packet)
    if size < 40:
        return None
    first = packet[0]
    if first == 0x45:  # IPv4 without options
        if packet[9] != IPPROTO_TCP or (packet[2] << 8 | packet[3]) != size or packet[6] & 0x3F or packet[7]:
            return None
        ip_len = 20
    elif first >> 4 == 6:
        if size < 60 or packet[6] != IPPROTO_TCP or (packet[4] << 8 | packet[5]) + 40 != size:
            return None
        ip_len = 40
    else:
        return None
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    if tcp_len < 20 or ip_len + tcp_len >= size:
        return None
    if packet[ip_len + 13] not in (_ACK, _PSH_ACK):
        return None
    return ip_len, tcp_len, size - ip_len - tcp_len


def _same_flow(a: bytes, b: bytes, ip_len: int, hdr_len: int) -> bool:
    """Everything but lengths, IDs, checksums, sequence and flags is equal."""
    if ip_len == 20:
        if a[1] != b[1] or a[6] != b[6] or a[8:10] != b[8:10] or a[12:20] != b[12:20]:
            return False
    elif a[0:4] != b[0:4] or a[6:40] != b[6:40]:
        return False
    t = ip_len
    return a[t : t + 4] == b[t : t + 4] and a[t + 8 : t + 13] == b[t + 8 : t + 13] \
        and a[t + 14 : t + 16] == b[t + 14 : t + 16] and a[t + 18 : hdr_len] == b[t + 18 : hdr_len]


def coalesce(packets: list[bytes]) -> list[tuple[bytes, int]]:
    """Records for an offload TUN, in order, each with how many packets it carries."""
    out: list[tuple[bytes, int]] = []
    group: list[bytes] = []
    layout: tuple[int, int, int] | None = None  # of the group's first packet
    last_payload = 0
    total = 0
    for packet in packets:
        this = _tcp_layout(packet)
        if group and this is not None and layout is not None:
            ip_len, tcp_len, gso_size = layout
            hdr_len = ip_len + tcp_len
            prev = group[-1]
            if (
                this[0] == ip_len and this[1] == tcp_len and 0 < this[2] <= gso_size
                and last_payload == gso_size and prev[hdr_len - tcp_len + 13] == _ACK
                and total + this[2] <= MAX_RECORD
                and int.from_bytes(packet[ip_len + 4 : ip_len + 8], "big")
                == (int.from_bytes(prev[ip_len + 4 : ip_len + 8], "big") + last_payload) & 0xFFFFFFFF
                and (ip_len == 40 or (packet[4] << 8 | packet[5]) == ((prev[4] << 8 | prev[5]) + 1) & 0xFFFF)
                and _same_flow(group[0], packet, ip_len, hdr_len)
            ):
                group.append(packet)
                last_payload = this[2]
                total += this[2]
                continue
        if group:
            out.append(_record(group, layout))
        group = [packet]
        layout = this
        last_payload = this[2] if this is not None else 0
        total = len(packet)
    if group:
        out.append(_record(group, layout))
    return out


def _record(group: list[bytes], layout: tuple[int, int, int] | None) -> tuple[bytes, int]:
    if len(group) == 1 or layout is None:
        return ZERO_VNET_HDR + group[0], 1
    ip_len, tcp_len, gso_size = layout
    hdr_len = ip_len + tcp_len
    first, last = group[0], group[-1]
    header = bytearray(first[:hdr_len])
    payload_len = sum(len(p) for p in group) - hdr_len * len(group)
    l4_total = tcp_len + payload_len
    if ip_len == 20:
        struct.pack_into("!H", header, 2, hdr_len + payload_len)
        header[10:12] = b"\0\0"
        struct.pack_into("!H", header, 10, 0xFFFF - _sum16(header[:20]) % 0xFFFF)
        addresses = _sum16(header[12:20])
        gso_type = GSO_TCPV4
    else:
        struct.pack_into("!H", header, 4, l4_total)
        addresses = _sum16(header[8:40])
        gso_type = GSO_TCPV6
    header[ip_len + 13] = last[ip_len + 13]  # PSH, if the last segment had it
    pseudo = (addresses + IPPROTO_TCP + l4_total) % 0xFFFF
    struct.pack_into("!H", header, ip_len + TCP_CSUM_OFFSET, pseudo)
    vnet = _HDR.pack(F_NEEDS_CSUM, gso_type, hdr_len, gso_size, ip_len, TCP_CSUM_OFFSET)
    return b"".join((vnet, header, *(memoryview(p)[hdr_len:] for p in group))), len(group)
