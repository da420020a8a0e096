"""p2pvpn.dataplane.offload against an independent reference (p2pvpn.testing.superpackets).

Segmentation is checked the way a receiver would: every segment's checksums
verify with a plain word-by-word implementation, segments fit, and the
payloads put back together are the original, in sequence-number order.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.dataplane import offload
from p2pvpn.dataplane.offload import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    MAX_UDP_SEGMENTS,
    VNET_HDR_LEN,
    ZERO_VNET_HDR,
    canonical_header,
    complete_checksum,
    segment,
    segment_size,
)
from p2pvpn.testing.packets import udp4, udp6
from p2pvpn.testing.superpackets import (
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    checksum_ok,
    tcp_record,
    udp_record,
)

V4 = ("100.64.0.1", "100.64.0.2")
V6 = ("fd00::1", "fd00::2")


def with_header(record: bytes, **fields: int) -> bytes:
    """``record`` with some virtio-net header fields replaced."""
    names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")
    values = dict(zip(names, struct.unpack_from("<BBHHHH", record)))
    values.update(fields)
    return struct.pack("<BBHHHH", *(values[n] for n in names)) + record[VNET_HDR_LEN:]


def tcp_parts(packet: bytes) -> tuple[int, int, int, bytes]:
    """(seq, flags, IPv4 ID or -1, payload) of a plain TCP packet."""
    if packet[0] >> 4 == 4:
        l4, ip_id = (packet[0] & 15) * 4, struct.unpack_from("!H", packet, 4)[0]
    else:
        l4, ip_id = 40, -1
    thl = (packet[l4 + 12] >> 4) * 4
    return struct.unpack_from("!I", packet, l4 + 4)[0], packet[l4 + 13], ip_id, packet[l4 + thl :]


def ip_length_ok(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        return struct.unpack_from("!H", packet, 2)[0] == len(packet)
    return struct.unpack_from("!H", packet, 4)[0] + 40 == len(packet)


# -- canonical headers ---------------------------------------------------------


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
def test_kernel_headers_are_canonical(addrs: tuple[str, str]) -> None:
    # What the kernel hands out for locally generated traffic is already the wire form.
    for record in (
        tcp_record(*addrs, b"x" * 5000, 1348),
        tcp_record(*addrs, b"x" * 5000, 1348, tcp_options=b"\x01\x01\x08\x0a" + bytes(8), ecn=True),
        tcp_record(*addrs, b""),
        udp_record(*addrs, b"y" * 3000, 1200),
        udp_record(*addrs, b"y" * 30),
    ):
        assert canonical_header(record) == record[:VNET_HDR_LEN]


def test_plain_packet_has_the_zero_header() -> None:
    for packet in (udp4(*V4, b"a"), udp6(*V6, b"b"), b"\x45"):
        assert canonical_header(ZERO_VNET_HDR + packet) == ZERO_VNET_HDR


def test_data_valid_is_dropped_and_hdr_len_recomputed() -> None:
    plain = ZERO_VNET_HDR + udp4(*V4, b"a")
    assert canonical_header(with_header(plain, flags=F_DATA_VALID)) == ZERO_VNET_HDR
    big = tcp_record(*V4, b"x" * 4000, 1000)
    # The kernel puts skb_headlen() in hdr_len, which may cover payload too.
    assert canonical_header(with_header(big, hdr_len=900)) == big[:VNET_HDR_LEN]
    assert canonical_header(with_header(big, csum_start=3, csum_offset=0)) == big[:VNET_HDR_LEN]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), flags=0), "GSO without NEEDS_CSUM"),
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), flags=F_NEEDS_CSUM | 4), "unknown flag"),
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), gso_type=GSO_TCPV6), "TCPV6 on IPv4"),
        (with_header(tcp_record(*V6, b"x" * 3000, 1000), gso_type=GSO_TCPV4), "TCPV4 on IPv6"),
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), gso_type=GSO_UDP_L4), "UDP_L4 on TCP"),
        (with_header(udp_record(*V4, b"x" * 3000, 1000), gso_type=GSO_UDP), "UFO"),
        (with_header(udp_record(*V4, b"x" * 3000, 1000), gso_type=GSO_UDP_L4 | GSO_ECN), "ECN on UDP"),
        (with_header(udp_record(*V4, b"x" * 3000, 1000), gso_type=GSO_TCPV4), "TCPV4 on UDP"),
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), gso_type=9), "unknown GSO type"),
        (with_header(tcp_record(*V4, b"x" * 3000, 1000), gso_size=0), "gso_size 0"),
        (tcp_record(*V4, b"", 1000), "super-packet without payload"),
        (udp_record(*V4, b"x" * (MAX_UDP_SEGMENTS + 1), 1), "too many UDP segments"),
        (with_header(ZERO_VNET_HDR + udp4(*V4, b"a"), gso_type=GSO_UDP_L4, gso_size=1), "GSO, no NEEDS_CSUM"),
        (tcp_record(*V4, b"x" * 3000, 1000)[:-1], "IPv4 length field disagrees"),
        (tcp_record(*V6, b"x" * 3000, 1000) + b"!", "IPv6 length field disagrees"),
        (with_header(ZERO_VNET_HDR + bytes.fromhex("4500001c0000400040010e0a646fbccd6441a7590800e5ca12340001"),
                     flags=F_NEEDS_CSUM), "NEEDS_CSUM on ICMP"),
        (ZERO_VNET_HDR, "no packet"),
    ],
)
def test_records_without_a_wire_form(record: bytes, why: str) -> None:
    assert canonical_header(record) is None, why


def test_fragments_have_no_wire_form() -> None:
    record = bytearray(udp_record(*V4, b"x" * 100))
    record[VNET_HDR_LEN + 6] |= 0x20  # MF
    assert canonical_header(bytes(record)) is None
    assert segment(bytes(with_header(bytes(record), gso_type=GSO_UDP_L4, gso_size=10))) is None


def test_truncated_l4_headers_have_no_wire_form() -> None:
    good = tcp_record(*V4, b"")
    # A TCP data offset pointing past the packet.
    bad = bytearray(good)
    bad[VNET_HDR_LEN + 20 + 12] = 0xF0
    assert canonical_header(bytes(bad)) is None
    assert segment(with_header(bytes(bad), gso_type=GSO_TCPV4, gso_size=100)) is None


@given(st.binary(max_size=200))
def test_canonical_header_and_segment_never_raise(junk: bytes) -> None:
    header = canonical_header(junk)
    assert header is None or len(header) == VNET_HDR_LEN
    result = segment(junk)
    assert result is None or all(isinstance(p, bytes) for p in result)


def test_segment_size_is_what_must_fit_the_mtu() -> None:
    big = tcp_record(*V4, b"x" * 5000, 1348)
    assert segment_size(big) == 20 + 20 + 1348
    assert segment_size(tcp_record(*V4, b"x" * 100, 1348)) == 20 + 20 + 100
    assert segment_size(ZERO_VNET_HDR + udp4(*V4, b"a" * 10)) == 20 + 8 + 10


# -- checksum completion -----------------------------------------------------------


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [0, 1, 2, 1331])
def test_needs_csum_packets_are_completed(addrs: tuple[str, str], size: int) -> None:
    for record in (tcp_record(*addrs, b"\x5a" * size), udp_record(*addrs, b"\xa5" * size)):
        (packet,) = segment(record)
        assert checksum_ok(packet)
        assert len(packet) == len(record) - VNET_HDR_LEN


def test_complete_checksum_refuses_an_offset_past_the_end() -> None:
    packet = udp4(*V4, b"abc")
    assert complete_checksum(packet, len(packet) - 1, 0) is None
    assert segment(with_header(ZERO_VNET_HDR + packet, flags=F_NEEDS_CSUM, csum_start=60000)) is None


def test_plain_records_pass_unchanged() -> None:
    packet = udp6(*V6, b"plain")
    assert segment(ZERO_VNET_HDR + packet) == [packet]
    assert segment(with_header(ZERO_VNET_HDR + packet, flags=F_DATA_VALID)) == [packet]


# -- segmentation ----------------------------------------------------------------------


def check_tcp_segments(record: bytes, segments: list[bytes]) -> None:
    """Every property a receiver relies on, against the super-packet ``record``."""
    _, gso_type, hdr_len, gso_size, _, _ = struct.unpack_from("<BBHHHH", record)
    seq0, flags0, id0, payload = tcp_parts(record[VNET_HDR_LEN:])
    assert len(segments) == max(1, -(-len(payload) // gso_size))
    offset = 0
    for index, seg in enumerate(segments):
        assert checksum_ok(seg), index
        assert ip_length_ok(seg)
        assert len(seg) <= hdr_len + gso_size
        seq, flags, ip_id, piece = tcp_parts(seg)
        assert seq == (seq0 + offset) & 0xFFFFFFFF
        assert ip_id == (-1 if id0 < 0 else (id0 + index) & 0xFFFF)
        last = index == len(segments) - 1
        expected = flags0
        if not last:
            expected &= ~(TCP_FIN | TCP_PSH)
        if index:
            expected &= ~TCP_CWR
        assert flags == expected, (index, flags, expected)
        if not last:
            assert len(piece) == gso_size
        offset += len(piece)
    assert b"".join(tcp_parts(s)[3] for s in segments) == payload


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
def test_tcp_super_packet_is_cut_like_the_kernel_does(addrs: tuple[str, str]) -> None:
    payload = bytes(range(256)) * 256  # 65536 bytes: too much for one IPv4 packet
    payload = payload[: 65535 - 40 - 12 - 40]
    record = tcp_record(*addrs, payload, 1348, flags=TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
                        tcp_options=b"\x01\x01\x08\x0a" + bytes(8), ecn=True)
    segments = segment(record)
    assert segments is not None
    check_tcp_segments(record, segments)
    assert len(segments) == 49


def test_sequence_numbers_and_ip_ids_wrap() -> None:
    record = tcp_record(*V4, b"z" * 5000, 1000, seq=0xFFFFFF00, ip_id=0xFFFE)
    segments = segment(record)
    assert segments is not None
    check_tcp_segments(record, segments)
    assert tcp_parts(segments[-1])[2] == 2  # 0xFFFE, 0xFFFF, 0, 1, 2


def test_ipv4_options_are_copied_to_every_segment() -> None:
    record = tcp_record(*V4, b"o" * 3000, 1000, ip_options=b"\x01\x01\x01\x00")
    segments = segment(record)
    assert segments is not None
    check_tcp_segments(record, segments)
    assert all(s[0] == 0x46 and s[20:24] == b"\x01\x01\x01\x00" for s in segments)


@pytest.mark.parametrize("addrs", [V4, V6], ids=["v4", "v6"])
def test_udp_super_packet_is_cut_into_datagrams(addrs: tuple[str, str]) -> None:
    payload = bytes(range(251)) * 20
    record = udp_record(*addrs, payload, 1200)
    segments = segment(record)
    assert segments is not None
    assert [len(s) - (28 if addrs is V4 else 48) for s in segments] == [1200] * 4 + [len(payload) - 4800]
    for index, seg in enumerate(segments):
        assert checksum_ok(seg) and ip_length_ok(seg)
        l4 = 20 if addrs is V4 else 40
        assert struct.unpack_from("!H", seg, l4 + 4)[0] == len(seg) - l4
        if addrs is V4:
            assert struct.unpack_from("!H", seg, 4)[0] == 7 + index
    assert b"".join(s[(28 if addrs is V4 else 48):] for s in segments) == payload


def test_checksum_that_sums_to_zero_is_sent_as_ffff() -> None:
    # Search for a UDP payload whose checksum would be 0: it must come out as 0xFFFF.
    for n in range(70000):
        record = udp_record(*V4, n.to_bytes(3, "big"))
        (packet,) = segment(record)
        if packet[26:28] == b"\xff\xff":
            assert checksum_ok(packet)
            return
    pytest.fail("no zero-sum payload found")


@settings(max_examples=150, deadline=None)
@given(
    v6=st.booleans(),
    size=st.integers(1, 65535 - 60 - 60),
    gso_size=st.integers(1, 9000),
    seq=st.integers(0, 2**32 - 1),
    ip_id=st.integers(0, 0xFFFF),
    flags=st.sampled_from([TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN | TCP_PSH, TCP_ACK | TCP_CWR | TCP_PSH]),
    options=st.integers(0, 10).map(lambda n: b"\x01" * (4 * n)),
    data=st.data(),
)
def test_tcp_segmentation_properties(
    v6: bool, size: int, gso_size: int, seq: int, ip_id: int, flags: int, options: bytes, data: st.DataObject
) -> None:
    if -(-size // gso_size) > 2000:
        gso_size = -(-size // 2000)  # keep each example fast
    payload = data.draw(st.binary(min_size=size, max_size=size), label="payload") if size < 3000 else bytes(size)
    record = tcp_record(*(V6 if v6 else V4), payload, gso_size, seq=seq, ip_id=ip_id, flags=flags, tcp_options=options)
    if len(record) - VNET_HDR_LEN > 65535:
        return
    assert canonical_header(record) == record[:VNET_HDR_LEN]
    segments = segment(record)
    assert segments is not None
    check_tcp_segments(record, segments)
    assert max(map(len, segments)) == segment_size(record)


@settings(max_examples=100, deadline=None)
@given(v6=st.booleans(), payload=st.binary(min_size=1, max_size=4000), gso_size=st.integers(64, 1472))
def test_udp_segmentation_properties(v6: bool, payload: bytes, gso_size: int) -> None:
    record = udp_record(*(V6 if v6 else V4), payload, gso_size)
    segments = segment(record)
    assert segments is not None
    assert all(checksum_ok(s) and ip_length_ok(s) for s in segments)
    l4 = 48 if v6 else 28
    assert b"".join(s[l4:] for s in segments) == payload
    assert max(map(len, segments)) == segment_size(record)


def test_gso_type_values_are_linux_s() -> None:
    # include/uapi/linux/virtio_net.h
    assert (GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN) == (0, 1, 3, 4, 5, 0x80)
    assert (F_NEEDS_CSUM, F_DATA_VALID) == (1, 2)
    assert offload.VNET_HDR_LEN == 10


def test_the_protocol_documents_segmentation_vector() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    record = tcp_record("100.111.188.205", "100.65.167.89", b"abcd", 2, seq=1, ack=1, flags=TCP_ACK | TCP_PSH, ip_id=1)
    assert f"3a12381236{record.hex()}" in doc
    assert canonical_header(record) == record[:VNET_HDR_LEN]
    segments = segment(record)
    assert segments is not None and len(segments) == 2
    for packet in segments:
        assert checksum_ok(packet)
        assert packet.hex() in doc


# -- the incremental segmenter against the straightforward one ---------------------------


def _reference_segment(packet: bytes, version: int, l4: int, l4_len: int, gso_size: int, protocol: int) -> list[bytes]:
    """The segmenter as it was before the incremental checksums: every header built and summed whole."""

    def sum16(data: bytes) -> int:
        value = int.from_bytes(data, "big")
        return (value << 8 if len(data) & 1 else value) % 0xFFFF

    def finish(total: int) -> int:
        return 0xFFFF - total % 0xFFFF

    hdr_len = l4 + l4_len
    template = bytearray(packet[:hdr_len])
    payload = packet[hdr_len:]
    if version == 4:
        addresses, ip_id = sum16(packet[12:20]), packet[4] << 8 | packet[5]
        template[10:12] = b"\0\0"
    else:
        addresses, ip_id = sum16(packet[8:40]), 0
    csum_at = l4 + (16 if protocol == 6 else 6)
    template[csum_at : csum_at + 2] = b"\0\0"
    if protocol == 6:
        seq, tcp_flags = int.from_bytes(packet[l4 + 4 : l4 + 8], "big"), packet[l4 + 13]
    out: list[bytes] = []
    for index, start in enumerate(range(0, max(len(payload), 1), gso_size)):
        chunk = payload[start : start + gso_size]
        l4_size = l4_len + len(chunk)
        header = bytearray(template)
        if version == 4:
            struct.pack_into("!HH", header, 2, l4 + l4_size, (ip_id + index) & 0xFFFF)
            struct.pack_into("!H", header, 10, finish(sum16(bytes(header[:l4]))))
        else:
            struct.pack_into("!H", header, 4, l4_size)
        if protocol == 6:
            flags = tcp_flags
            if start + gso_size < len(payload):
                flags &= ~(TCP_FIN | TCP_PSH)
            if index:
                flags &= ~TCP_CWR
            struct.pack_into("!I", header, l4 + 4, (seq + start) & 0xFFFFFFFF)
            header[l4 + 13] = flags
        else:
            struct.pack_into("!H", header, l4 + 4, l4_size)
        total = addresses + protocol + l4_size + sum16(bytes(header[l4:])) + sum16(chunk)
        struct.pack_into("!H", header, csum_at, finish(total))
        out.append(bytes(header) + chunk)
    return out


def _scramble(record: bytes, offsets: list[int], values: bytes) -> bytes:
    """``record`` with the bytes at ``offsets`` (of the IP packet) replaced: fields segmentation copies."""
    out = bytearray(record)
    for offset, value in zip(offsets, values):
        out[VNET_HDR_LEN + offset] = value
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(
    v6=st.booleans(),
    udp=st.booleans(),
    size=st.integers(0, 12_000),
    gso_size=st.integers(1, 3000),
    seq=st.integers(0, 2**32 - 1),
    ip_id=st.integers(0, 0xFFFF),
    flags=st.integers(0, 255),
    tcp_options=st.integers(0, 10).map(lambda n: b"\x01" * (4 * n)),
    ip_options=st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2]),
    noise=st.binary(min_size=16, max_size=16),
    data=st.data(),
)
def test_segment_bytes_equal_the_straightforward_segmenter(
    v6: bool, udp: bool, size: int, gso_size: int, seq: int, ip_id: int, flags: int, tcp_options: bytes,
    ip_options: bytes, noise: bytes, data: st.DataObject,
) -> None:
    """Any TCP/UDP super-packet, any header bytes segmentation copies (TOS, TTL, DF, ack, window, urgent,
    options, class, flow label, hop limit): segment() gives exactly the reference's bytes."""
    payload = data.draw(st.binary(min_size=size, max_size=size), label="payload")
    addrs = V6 if v6 else V4
    if udp:
        record = udp_record(*addrs, payload, gso_size, ip_id=ip_id)
        l4_len = 8
    else:
        record = tcp_record(*addrs, payload, gso_size, seq=seq, ip_id=ip_id, flags=flags, tcp_options=tcp_options,
                            ip_options=b"" if v6 else ip_options)  # fmt: skip
        l4_len = 20 + len(tcp_options)
    l4 = 40 if v6 else 20 + (0 if udp else len(ip_options))
    if len(record) - VNET_HDR_LEN > 65535:
        return
    copied = [1, 2, 3, 7] if v6 else [1, 8]  # IPv6 class/flow label/hop limit; IPv4 TOS, TTL
    if not udp:
        copied += [l4 + 8, l4 + 9, l4 + 10, l4 + 11, l4 + 14, l4 + 15, l4 + 18, l4 + 19]  # ack, window, urgent
        copied += [l4 + 20 + i for i in range(min(len(tcp_options), 4))]
    record = _scramble(record, copied, noise)
    if not v6:
        record = _scramble(record, [6], bytes([noise[-1] & 0x40]))  # DF or not
    assert record[1] != GSO_NONE
    expected = _reference_segment(record[VNET_HDR_LEN:], 6 if v6 else 4, l4, l4_len, gso_size, 17 if udp else 6)
    assert segment(record) == expected


def test_sum16_folding_matches_the_plain_residue() -> None:
    for n in (0, 1, 2, 3, 679, 680, 681, 1380, 1381, 2000, 9000, 65535):
        data = bytes(range(256)) * (n // 256 + 1)
        data = bytes(b ^ (i * 7 & 0xFF) for i, b in enumerate(data[:n]))
        value = int.from_bytes(data, "big") << (8 if n & 1 else 0)
        assert offload._sum16(data) == value % 0xFFFF, n
        assert offload._sum16(b"\xff" * n) == (int.from_bytes(b"\xff" * n, "big") << (8 if n & 1 else 0)) % 0xFFFF


@given(st.binary(max_size=3000), st.integers(0, 40))
def test_sum16_is_the_residue_of_the_padded_bytes(data: bytes, repeat: int) -> None:
    """Folded or not, any length (repeated up to 120 000 bytes): the plain big-int residue."""
    data = data * (repeat if repeat > 20 else 1)  # now and then a long one, beyond both folds
    expected = (int.from_bytes(data, "big") << (8 if len(data) & 1 else 0)) % 0xFFFF
    assert offload._sum16(data) == expected
    assert offload._sum16(memoryview(data)) == expected
