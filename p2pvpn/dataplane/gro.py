"""Receive coalescing (GRO in userspace), sans-IO: consecutive TCP segments -> one TSO record.

Why: over the datagram path each IP packet arrives alone, and writing it to
the TUN costs a trip through the kernel's TCP input per 1400 bytes; py-spy
put ~45 % of the receiving node's busy time in those writes. An offload TUN
takes a 64 KiB super-packet instead (docs/protocol.md §5.3.1), as the
kernel's own GRO would have built it; wireguard-go and Tailscale do the same.

Theory of operation: walk the packets in arrival order, keeping one open
group per TCP flow (addresses and ports, one direction). A packet joins
its flow's open group when it continues it exactly as the kernel's
segmentation would have cut it (same addresses, ports, ack, window,
options, IPv4 ID +1, sequence right after, every earlier segment the same
size and flagged ACK only, PSH allowed on the last); otherwise it starts
the flow's next group. Packets of other flows, ACKs going the other way
and non-TCP packets in between do not end a group, so interleaved flows
and a batch that came in many receives still make 64 KiB records; a gap
(a lost or late segment) ends one, and the segments after it form the
next group, never merged across the gap. Records come out in the order
their groups started: within a flow that is arrival order, so nothing is
reordered within a flow and nothing is held beyond the batch. A group of
two or more becomes one record: the first segment's headers with the
lengths fixed, the payloads concatenated, and a ``NEEDS_CSUM`` virtio-net
header whose TCP checksum field holds the pseudo-header sum, which is the
kernel's convention (``p2pvpn.dataplane.offload.segment`` cuts it back
into exactly the packets it came from; a test checks that). Everything
else passes as a plain record (zero header). Pure: bytes in, records out.
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


def _flow(packet: bytes, ip_len: int) -> bytes:
    """Addresses and ports: one direction of one TCP connection."""
    if ip_len == 20:
        return packet[12:24]
    return packet[8:44]


def _fixed(packet: bytes, ip_len: int, hdr_len: int) -> bytes:
    """The header bytes a later segment must repeat that the flow key (addresses, ports) leaves out.

    IPv4: TOS, the flags byte (DF), TTL and protocol; IPv6: version, class,
    flow label, next header, hop limit; TCP: ack, data offset, window,
    urgent pointer and options. Not lengths, IDs, checksums, sequence, flags.
    """
    t = ip_len
    if ip_len == 20:
        ip = packet[1:2] + packet[6:7] + packet[8:10]
    else:
        ip = packet[0:4] + packet[6:8]
    return ip + packet[t + 8 : t + 13] + packet[t + 14 : t + 16] + packet[t + 18 : hdr_len]


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class _Group:
    """One flow's run of segments that will become one record."""

    __slots__ = ("packets", "layout", "last_payload", "total", "fixed", "next_seq", "next_id", "last_flags")

    def __init__(self, packet: bytes, layout: tuple[int, int, int] | None) -> None:
        self.packets = [packet]
        self.layout = layout
        self.total = len(packet)
        self.last_payload = layout[2] if layout is not None else 0
        self.fixed = b""  # what takes() compares, set when a second packet is offered (most groups stay single)

    def _prime(self) -> None:
        packet = self.packets[0]
        ip_len, tcp_len, payload = self.layout  # type: ignore[misc]
        self.fixed = _fixed(packet, ip_len, ip_len + tcp_len)
        self.next_seq = (_U32.unpack_from(packet, ip_len + 4)[0] + payload) & 0xFFFFFFFF
        self.next_id = (_U16.unpack_from(packet, 4)[0] + 1) & 0xFFFF
        self.last_flags = packet[ip_len + 13]

    def join(self, packet: bytes, this: tuple[int, int, int]) -> bool:
        """Add ``packet`` (of this group's flow) if it continues the group exactly as the kernel would have cut it.

        Cheap tests first; the group keeps the next sequence number and IPv4
        ID and the header bytes every segment repeats, so a packet costs two
        unpacks and one comparison of its :func:`_fixed` bytes.
        """
        layout = self.layout
        assert layout is not None
        ip_len, tcp_len, gso_size = layout
        payload = this[2]
        if not self.fixed:
            self._prime()
        if not (
            this[0] == ip_len and this[1] == tcp_len and 0 < payload <= gso_size
            and self.last_payload == gso_size and self.last_flags == _ACK
            and self.total + payload <= MAX_RECORD
            and _U32.unpack_from(packet, ip_len + 4)[0] == self.next_seq
            and (ip_len == 40 or _U16.unpack_from(packet, 4)[0] == self.next_id)
            and _fixed(packet, ip_len, ip_len + tcp_len) == self.fixed
        ):  # fmt: skip
            return False
        self.packets.append(packet)
        self.last_payload = payload
        self.total += payload
        self.next_seq = (self.next_seq + payload) & 0xFFFFFFFF
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.last_flags = packet[ip_len + 13]
        return True


def coalesce(packets: list[bytes]) -> list[tuple[bytes, int]]:
    """Records for an offload TUN, each with how many packets it carries; per flow in arrival order."""
    groups: list[_Group] = []
    open_groups: dict[bytes, _Group] = {}
    for packet in packets:
        this = _tcp_layout(packet)
        if this is None:
            groups.append(_Group(packet, None))
            if len(packet) >= 40 and (packet[0] == 0x45 and packet[9] == IPPROTO_TCP):
                open_groups.pop(packet[12:24], None)  # a SYN, FIN, RST... of a flow ends its group
            elif len(packet) >= 60 and packet[0] >> 4 == 6 and packet[6] == IPPROTO_TCP:
                open_groups.pop(packet[8:44], None)
            continue
        key = packet[12:24] if this[0] == 20 else packet[8:44]  # _flow(), inline: once per packet
        group = open_groups.get(key)
        if group is not None and group.join(packet, this):
            continue
        group = _Group(packet, this)
        groups.append(group)
        open_groups[key] = group
    return [_record(g.packets, g.layout, g.total) for g in groups]


def _record(group: list[bytes], layout: tuple[int, int, int] | None, total: int) -> tuple[bytes, int]:
    """The record for one group; ``total`` is the IP length of the super-packet (one header, every payload)."""
    if len(group) == 1 or layout is None:
        return ZERO_VNET_HDR + group[0], 1
    ip_len, tcp_len, gso_size = layout
    hdr_len = ip_len + tcp_len
    first, last = group[0], group[-1]
    header = bytearray(first[:hdr_len])
    payload_len = total - hdr_len
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
    parts = [vnet, header]
    parts += [p[hdr_len:] for p in group]
    return b"".join(parts), len(group)
