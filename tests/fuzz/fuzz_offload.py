"""Fuzz target: the TUN offload parser, ``p2pvpn.dataplane.offload``.

Input: one record as a peer's ``Data.offload_packets`` entry or our own
offload TUN delivers it (10-byte virtio-net header, then an IP packet).
Contract: ``canonical_header`` and ``segment`` return None ("drop it") or
their result, and no exception escapes (the module has no error type).

For a record whose canonical header exists (what a receiver accepts), the
harness first makes it what a kernel would hand over: that header, a valid
IPv4 header checksum and the pseudo-header sum in the TCP/UDP checksum
field. Then: the canonical header is a fixed point; ``segment`` must cut
it; every segment is a well-formed packet whose checksums verify (checked
with ``p2pvpn.dataplane.packet.checksum``, an RFC 1071 sum independent of
the module's own), no longer
than ``segment_size``; a super-packet's segments carry exactly its
payload, in order, ``gso_size`` bytes each but the last.
"""

from __future__ import annotations

import struct

from p2pvpn.dataplane.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    IPPROTO_TCP,
    VNET_HDR_LEN,
    canonical_header,
    segment,
    segment_size,
)
from p2pvpn.dataplane.packet import checksum
from p2pvpn.testing.superpackets import TCP_CWR, TCP_FIN, TCP_PSH, ones_sum, pseudo_header, tcp_record, udp_record

EXPECTED: tuple[type[BaseException], ...] = ()
MAX_LEN = 4096

_OFFLOAD_TCP4 = bytes.fromhex(  # the golden vector of docs/protocol.md §5.3.1
    "01012800020014001000" "4500002c0001400040060df4646fbccd6441a759" "9c40145100000001000000015018ffff2cf60000" "61626364"
)


def seeds() -> list[bytes]:
    payload = bytes(range(256)) * 5
    return [
        _OFFLOAD_TCP4,
        tcp_record("100.64.0.2", "100.64.0.3", payload, 1000),
        tcp_record("100.64.0.2", "100.64.0.3", payload, 500, ecn=True, flags=0x99, ip_options=b"\x01" * 4),
        tcp_record("fd00::2", "fd00::3", payload, 1200, tcp_options=b"\x01" * 12),
        tcp_record("100.64.0.2", "100.64.0.3", b"hello"),
        udp_record("100.64.0.2", "100.64.0.3", payload, 1200),
        udp_record("fd00::2", "fd00::3", payload, 100),
        udp_record("fd00::2", "fd00::3", b"hello"),
        bytes(VNET_HDR_LEN) + bytes.fromhex("4500001c0000400040010e0a646fbccd6441a7590800e5ca12340001"),
    ]


def _as_kernel_would(record: bytes, header: bytes) -> bytes:
    """``record`` with ``header``, a valid IPv4 header checksum and the pseudo-header sum in its L4 checksum."""
    out = bytearray(header + record[VNET_HDR_LEN:])
    packet = memoryview(out)[VNET_HDR_LEN:]
    _, _, _, _, csum_start, csum_offset = struct.unpack_from("<BBHHHH", header)
    if packet[0] >> 4 == 4:
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", ~ones_sum(bytes(packet[:csum_start])) & 0xFFFF)
        src, dst, protocol = bytes(packet[12:16]), bytes(packet[16:20]), packet[9]
    else:
        src, dst, protocol = bytes(packet[8:24]), bytes(packet[24:40]), packet[6]
    partial = ones_sum(pseudo_header(src, dst, protocol, len(packet) - csum_start))
    struct.pack_into("!H", packet, csum_start + csum_offset, partial)
    return bytes(out)


def _checksums_ok(packet: bytes) -> bool:
    """Whether the IPv4 header checksum (if any) and the TCP/UDP checksum verify (UDP's may not be 0)."""
    if packet[0] >> 4 == 4:
        l4 = (packet[0] & 0x0F) * 4
        if checksum(packet[:l4]) != 0:
            return False
        src, dst, protocol = packet[12:16], packet[16:20], packet[9]
    else:
        l4, src, dst, protocol = 40, packet[8:24], packet[24:40], packet[6]
    if protocol == 17 and packet[l4 + 6 : l4 + 8] == b"\0\0":
        return False
    return checksum(pseudo_header(src, dst, protocol, len(packet) - l4) + packet[l4:]) == 0


def _check_segments(record: bytes, segments: list[bytes]) -> None:
    _, gso_type, hdr_len, gso_size, csum_start, _ = struct.unpack_from("<BBHHHH", record)
    packet = record[VNET_HDR_LEN:]
    limit = segment_size(record)
    for piece in segments:
        assert type(piece) is bytes and len(piece) <= limit, "segment longer than segment_size"
        if piece[0] >> 4 == 4:
            assert struct.unpack_from("!H", piece, 2)[0] == len(piece), "wrong IPv4 total length"
        else:
            assert struct.unpack_from("!H", piece, 4)[0] == len(piece) - 40, "wrong IPv6 payload length"
        assert _checksums_ok(piece), "a checksum does not verify"
    if gso_type == GSO_NONE:
        assert len(segments) == 1 and segments[0][:csum_start] == packet[:csum_start]
        return
    payload = packet[hdr_len:]
    assert len(segments) == -(-len(payload) // gso_size), "wrong number of segments"
    assert b"".join(s[hdr_len:] for s in segments) == payload, "payload not carried exactly"
    assert all(len(s) - hdr_len == gso_size for s in segments[:-1])
    if (packet[9] if packet[0] >> 4 == 4 else packet[6]) == IPPROTO_TCP:
        tcp = csum_start
        seq = int.from_bytes(packet[tcp + 4 : tcp + 8], "big")
        for index, piece in enumerate(segments):
            assert int.from_bytes(piece[tcp + 4 : tcp + 8], "big") == (seq + index * gso_size) & 0xFFFFFFFF
            flags_here = piece[tcp + 13]
            if index < len(segments) - 1:
                assert not flags_here & (TCP_FIN | TCP_PSH), "FIN or PSH before the last segment"
            if index:
                assert not flags_here & TCP_CWR, "CWR after the first segment"


def one_input(data: bytes) -> None:
    header = canonical_header(data)
    assert header is None or (len(header) == VNET_HDR_LEN and header[0] in (0, F_NEEDS_CSUM))
    if header is None or header[0] == 0:
        # No wire form, or a plain packet: segment must still return None or packets, never raise.
        plain = segment(data)
        assert plain is None or all(type(piece) is bytes for piece in plain)
        return
    # (segment on the record as it came differs from the call below only in checksum values.)
    record = _as_kernel_would(data, header)
    assert canonical_header(record) == header, "canonical header is not a fixed point"
    segments = segment(record)
    assert segments is not None, "a record with a canonical header could not be segmented"
    _check_segments(record, segments)
