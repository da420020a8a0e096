"""TUN segmentation offload, sans-IO: virtio-net headers, the wire rules, software segmentation.

Why: per-packet cost limits a userspace VPN. A TUN opened with
``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` hands us TCP (and UDP) *super-packets*
of up to 64 KiB, each behind a 10-byte ``struct virtio_net_hdr``, and takes
them back the same way: one read and one write per 64 KiB instead of one per
1400 bytes (wireguard-go and Tailscale do the same).

Theory of operation
-------------------
A *record* is what an offload TUN reads and writes: the 10-byte header, then
one IP packet. The header says whether the kernel left the TCP/UDP checksum
for us to finish (``NEEDS_CSUM``, with ``csum_start``/``csum_offset``) and
whether the packet is a super-packet to be cut into ``gso_size`` payload
pieces (``gso_type``, ``hdr_len``).

* Between two peers that both announced ``gso/1`` records travel as they are
  (``Data.offload_packets``), but only in the *canonical* form of
  docs/protocol.md §5.3.1: :func:`canonical_header` computes it from the
  packet and the header's ``flags``, ``gso_type``, ``gso_size``; a sender
  sends that header, a receiver drops any record whose header differs.
  The kernel's own headers are canonical for the traffic a host generates.
* Towards a peer without ``gso/1`` (or a TUN without offload) a record is
  turned into plain packets by :func:`segment`: super-packets are cut in
  software exactly as the kernel's GSO would, and every checksum completed.

Everything here is pure: bytes in, bytes (or None for "drop it") out.
Checksums use one trick: the 16-bit one's-complement sum of a buffer is its
big-endian integer value modulo 0xFFFF (2**16 = 1 mod 0xFFFF), which
``int.from_bytes`` computes in C.
"""

from __future__ import annotations

import struct

VNET_HDR_LEN = 10
"""Bytes of ``struct virtio_net_hdr`` (no ``num_buffers``): TUNSETVNETHDRSZ's default."""
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)
"""Header of a plain packet: nothing offloaded."""

# struct virtio_net_hdr, little-endian (TUNSETVNETLE is the default on little-endian
# hosts; the wire format is little-endian everywhere).
_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

F_NEEDS_CSUM = 1   # VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum at csum_start+csum_offset left to complete
F_DATA_VALID = 2   # VIRTIO_NET_HDR_F_DATA_VALID: checksum already verified (kernel reads only)

GSO_NONE = 0       # VIRTIO_NET_HDR_GSO_NONE
GSO_TCPV4 = 1      # VIRTIO_NET_HDR_GSO_TCPV4
GSO_UDP = 3        # VIRTIO_NET_HDR_GSO_UDP (UFO, obsolete: never accepted)
GSO_TCPV6 = 4      # VIRTIO_NET_HDR_GSO_TCPV6
GSO_UDP_L4 = 5     # VIRTIO_NET_HDR_GSO_UDP_L4 (USO)
GSO_ECN = 0x80     # VIRTIO_NET_HDR_GSO_ECN: TCP only; first segment carries CWR

MAX_UDP_SEGMENTS = 64
"""Most pieces a UDP super-packet may be cut into (the smallest kernel limit, UDP_MAX_SEGMENTS)."""

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6

_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80


# Fold widths, multiples of 16 bits: 2**(16k) = 1 mod 0xFFFF, so a fold keeps the residue.
_FOLD1, _FOLD2 = 5440, 2720
_MASK1, _MASK2 = (1 << _FOLD1) - 1, (1 << _FOLD2) - 1


def _sum16(data: bytes | memoryview) -> int:
    """One's-complement sum of ``data`` (zero-padded to even length), modulo 0xFFFF.

    A big int's ``% 0xFFFF`` costs one hardware division per 30-bit digit;
    folding the high half onto the low half first (shift, mask, add: no
    division), twice, leaves a quarter of the digits of a 1400-byte segment
    to divide: 1.9 instead of 2.5 µs per sum here.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    value = (value >> _FOLD1) + (value & _MASK1)
    value = (value >> _FOLD2) + (value & _MASK2)
    return value % 0xFFFF


def _finish(total: int) -> int:
    """The checksum field for a sum: never 0, so UDP's "no checksum" can't arise (RFC 768)."""
    return 0xFFFF - total % 0xFFFF


def _ip_layout(record: bytes) -> tuple[int, int, int] | None:
    """(IP version, offset of the L4 header in ``record``, L4 protocol) or None.

    The IP packet starts after the header; it must be well formed and its
    length field must match the record (super-packets included). IPv6
    extension headers are not followed: the protocol is the first next header.
    """
    size = len(record) - VNET_HDR_LEN
    if size < 20:
        return None
    first = record[VNET_HDR_LEN]
    version = first >> 4
    if version == 4:
        ihl = (first & 0x0F) * 4
        if ihl < 20 or ihl > size or (record[12] << 8 | record[13]) != size:
            return None
        return 4, VNET_HDR_LEN + ihl, record[19]
    if version == 6 and size >= 40 and (record[14] << 8 | record[15]) + 40 == size:
        return 6, VNET_HDR_LEN + 40, record[16]
    return None


def canonical_header(record: bytes) -> bytes | None:
    """The wire header for ``record`` (docs/protocol.md §5.3.1), or None if it has none.

    Keeps the record's ``flags`` (minus ``DATA_VALID``), ``gso_type`` and
    ``gso_size``; derives ``hdr_len``, ``csum_start`` and ``csum_offset``
    from the packet. None means the record cannot travel offloaded: a
    receiver drops it, a sender segments it in software instead.
    """
    if len(record) <= VNET_HDR_LEN:
        return None
    flags, gso_type, _, gso_size, _, _ = _HDR.unpack_from(record)
    flags &= ~F_DATA_VALID  # "already verified" means the checksum is complete: nothing to do
    if flags == 0:
        return ZERO_VNET_HDR if gso_type == GSO_NONE else None
    if flags != F_NEEDS_CSUM:
        return None
    layout = _ip_layout(record)
    if layout is None:
        return None
    version, l4, protocol = layout
    if version == 4 and (record[16] & 0x3F or record[17]):
        return None  # a fragment (MF or an offset): its checksum spans other packets
    size = len(record)
    if protocol == IPPROTO_TCP:
        if l4 + 20 > size:
            return None
        l4_len = (record[l4 + 12] >> 4) * 4
        if l4_len < 20 or l4 + l4_len > size:
            return None
        csum_offset = TCP_CSUM_OFFSET
        gso_ok = (gso_type & ~GSO_ECN) == (GSO_TCPV4 if version == 4 else GSO_TCPV6)
    elif protocol == IPPROTO_UDP:
        l4_len = 8
        if l4 + 8 > size or (record[l4 + 4] << 8 | record[l4 + 5]) != size - l4:
            return None
        csum_offset = UDP_CSUM_OFFSET
        gso_ok = gso_type == GSO_UDP_L4
    else:
        return None
    csum_start = l4 - VNET_HDR_LEN
    if gso_type == GSO_NONE:
        return _HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, csum_start, csum_offset)
    hdr_len = csum_start + l4_len
    payload = size - VNET_HDR_LEN - hdr_len
    if not gso_ok or gso_size < 1 or payload < 1:
        return None
    if protocol == IPPROTO_UDP and -(-payload // gso_size) > MAX_UDP_SEGMENTS:
        return None
    return _HDR.pack(F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def segment_size(record: bytes) -> int:
    """Size of the largest IP packet ``record`` stands for: what must fit the peer's MTU.

    For a super-packet, one segment (``hdr_len + gso_size``, or the whole
    packet if that is smaller); else the packet. Meaningful for canonical
    headers only.
    """
    size = len(record) - VNET_HDR_LEN
    if record[1] == GSO_NONE:
        return size
    _, _, hdr_len, gso_size, _, _ = _HDR.unpack_from(record)
    return min(size, hdr_len + gso_size)


def segment(record: bytes) -> list[bytes] | None:
    """Plain IP packets, every checksum complete, that ``record`` stands for; None if it is malformed.

    A super-packet is cut like the kernel's GSO does (payload split by
    ``gso_size``, lengths, IPv4 IDs, TCP sequence numbers and checksums fixed,
    FIN/PSH kept on the last TCP segment only, CWR on the first only). A
    packet with ``NEEDS_CSUM`` gets its checksum completed.
    """
    if len(record) <= VNET_HDR_LEN:
        return None
    flags, gso_type, _, gso_size, csum_start, csum_offset = _HDR.unpack_from(record)
    if gso_type == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            packet = complete_checksum(record[VNET_HDR_LEN:], csum_start, csum_offset)
            return None if packet is None else [packet]
        return [record[VNET_HDR_LEN:]]
    layout = _ip_layout(record)
    if layout is None or gso_size < 1:
        return None
    version, l4, protocol = layout
    if version == 4 and (record[16] & 0x3F or record[17]):
        return None  # TSO never makes fragments
    base = gso_type & ~GSO_ECN
    packet = record[VNET_HDR_LEN:]
    l4 -= VNET_HDR_LEN
    if protocol == IPPROTO_TCP and base == (GSO_TCPV4 if version == 4 else GSO_TCPV6):
        if l4 + 20 > len(packet):
            return None
        l4_len = (packet[l4 + 12] >> 4) * 4
        if l4_len < 20 or l4 + l4_len > len(packet):
            return None
        return _segment(packet, version, l4, l4_len, gso_size, IPPROTO_TCP)
    if protocol == IPPROTO_UDP and gso_type == GSO_UDP_L4 and l4 + 8 <= len(packet):
        return _segment(packet, version, l4, 8, gso_size, IPPROTO_UDP)
    return None


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes | None:
    """``packet`` with the checksum the kernel left partial filled in (skb_checksum_help).

    The field holds the pseudo-header sum; the checksum is the complement of
    the sum from ``csum_start`` to the end, that field included.
    """
    field = csum_start + csum_offset
    if field + 2 > len(packet):
        return None
    check = _finish(_sum16(memoryview(packet)[csum_start:]))
    return b"".join((packet[:field], check.to_bytes(2, "big"), packet[field + 2 :]))


def _segment(packet: bytes, version: int, l4: int, l4_len: int, gso_size: int, protocol: int) -> list[bytes]:
    """Cut a TCP or UDP super-packet into segments of ``gso_size`` payload bytes.

    The sender's hot loop on the datagram path (one pass per 1400-byte
    segment), so the checksums are incremental: the sums of the header bytes
    that stay the same are taken once, and per segment only the fields that
    change (lengths, IPv4 ID, TCP sequence and flags) and the payload's sum
    are added; one ``struct.pack`` writes each header. The bytes are those of
    the straightforward version (tests/dataplane/test_offload.py checks it
    against one).
    """
    hdr_len = l4 + l4_len
    tcp = protocol == IPPROTO_TCP
    template = bytearray(packet[:hdr_len])
    # Zero what changes per segment: the constant rest is summed once.
    if version == 4:
        template[2:6] = bytes(4)      # total length, ID
        template[10:12] = b"\0\0"    # header checksum
        ip_base = _sum16(template[:l4])
        ip_id = packet[4] << 8 | packet[5]
        addresses = _sum16(packet[12:20])
        ip_head = (bytes(template[0:2]), bytes(template[6:10]), bytes(template[12:l4]))
    else:
        template[4:6] = b"\0\0"      # payload length
        addresses = _sum16(packet[8:40])
        ip_head = (bytes(template[0:4]), bytes(template[6:40]))
    if tcp:
        seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
        tcp_flags = packet[l4 + 13]
        template[l4 + 4 : l4 + 8] = bytes(4)  # sequence number
        template[l4 + 13] = 0                 # flags: the low byte of the word at 12
        template[l4 + 16 : l4 + 18] = b"\0\0"
        l4_head = (bytes(template[l4 : l4 + 4]), bytes(template[l4 + 8 : l4 + 13]),
                   bytes(template[l4 + 14 : l4 + 16]), bytes(template[l4 + 18 : hdr_len]))  # fmt: skip
    else:
        template[l4 + 4 : l4 + 8] = bytes(4)  # length, checksum
        l4_head = (bytes(template[l4 : l4 + 4]),)
    # Pseudo-header (addresses, protocol) + the L4 header's constant words.
    l4_base = addresses + protocol + _sum16(template[l4:hdr_len])
    if version == 4:
        pack = struct.Struct(f"!2sHH4sH{l4 - 12}s" + ("4sI5sB2sH" + f"{l4_len - 18}s" if tcp else "4sHH")).pack
    else:
        pack = struct.Struct("!4sH34s" + ("4sI5sB2sH" + f"{l4_len - 18}s" if tcp else "4sHH")).pack
    segments: list[bytes] = []
    total = len(packet) - hdr_len
    for index, start in enumerate(range(0, max(total, 1), gso_size)):
        chunk = packet[hdr_len + start : hdr_len + start + gso_size]
        l4_size = l4_len + len(chunk)
        if tcp:
            flags = tcp_flags
            if start + gso_size < total:
                flags &= ~(_TCP_FIN | _TCP_PSH)
            if index:
                flags &= ~_TCP_CWR
            this_seq = (seq + start) & 0xFFFFFFFF
            check = _finish(l4_base + l4_size + (this_seq >> 16) + (this_seq & 0xFFFF) + flags + _sum16(chunk))
            l4_fields: tuple[object, ...] = (l4_head[0], this_seq, l4_head[1], flags, l4_head[2], check, l4_head[3])
        else:
            check = _finish(l4_base + l4_size + l4_size + _sum16(chunk))  # pseudo-header and UDP length
            l4_fields = (l4_head[0], l4_size, check)
        if version == 4:
            this_id = (ip_id + index) & 0xFFFF
            length = l4 + l4_size
            ip_check = _finish(ip_base + length + this_id)
            header = pack(ip_head[0], length, this_id, ip_head[1], ip_check, ip_head[2], *l4_fields)
        else:
            header = pack(ip_head[0], l4_size, ip_head[1], *l4_fields)
        segments.append(header + chunk)
    return segments
