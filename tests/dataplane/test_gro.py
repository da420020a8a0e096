"""Receive coalescing: segments -> TSO records -> segment() gives back exactly the same packets.

Exactly: each input packet once, nothing else, and within one TCP flow (one direction of one
connection) in arrival order; packets of different flows may change places.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.dataplane.gro import coalesce
from p2pvpn.dataplane.offload import VNET_HDR_LEN, ZERO_VNET_HDR, canonical_header, complete_checksum, segment
from p2pvpn.testing.packets import udp4
from p2pvpn.testing.superpackets import checksum_ok, tcp_record

V4 = ("100.64.0.1", "100.64.0.2")
V6 = ("fd00::1", "fd00::2")
V4B = ("100.64.0.3", "100.64.0.2")
V6B = ("fd00::3", "fd00::2")


def segments(addrs: tuple[str, str], size: int, gso: int, seq: int = 1000, ip_id: int = 7, **kw: object) -> list[bytes]:
    record = tcp_record(*addrs, random.Random(size).randbytes(size), gso, seq=seq, ip_id=ip_id, **kw)  # type: ignore[arg-type]
    packets = segment(record)
    assert packets is not None
    return packets


def check_round_trip(packets: list[bytes]) -> list[tuple[bytes, int]]:
    records = coalesce(packets)
    again: list[bytes] = []
    for record, count in records:
        assert canonical_header(record) == record[:VNET_HDR_LEN]  # what an offload TUN (and §5.3.1) accepts
        cut = segment(record)
        assert cut is not None and len(cut) == count
        again += cut
        if record[1]:  # a super-packet: its partial checksum completes to a valid one
            whole = complete_checksum(record[VNET_HDR_LEN:], record[6] | record[7] << 8, 16)
            assert whole is not None and checksum_ok(whole)
    assert_same_packets(again, packets)
    return records


def flow_key(packet: bytes) -> bytes:
    """A TCP flow's addresses and ports; any other packet is its own 'flow' (it keeps its place among them)."""
    if packet[0] == 0x45 and packet[9] == 6:
        return packet[12:24]
    if packet[0] >> 4 == 6 and packet[6] == 6:
        return packet[8:44]
    return b"other"


def assert_same_packets(got: list[bytes], sent: list[bytes]) -> None:
    assert sorted(got) == sorted(sent)  # each once, nothing added
    for key in {flow_key(p) for p in sent}:
        assert [p for p in got if flow_key(p) == key] == [p for p in sent if flow_key(p) == key]


def test_one_flow_becomes_one_record_v4_and_v6() -> None:
    for addrs in (V4, V6):
        packets = segments(addrs, 40 * 1380, 1380)
        assert len(packets) == 40
        records = check_round_trip(packets)
        assert [c for _, c in records] == [40]


def test_short_last_segment_and_psh_end_a_group() -> None:
    packets = segments(V4, 10 * 1000 + 123, 1000) + segments(V4, 3000, 1000, seq=1000 + 10 * 1000 + 123, ip_id=18)
    records = check_round_trip(packets)
    assert [c for _, c in records] == [11, 3]


def test_other_traffic_passes_alone_in_order() -> None:
    a = segments(V4, 5 * 1000, 1000)
    b = segments(V6, 5 * 1000, 1000)
    noise = udp4(*V4, b"x" * 100)
    packets = a[:2] + [noise] + a[2:] + b
    records = check_round_trip(packets)
    assert records[1] == (ZERO_VNET_HDR + noise, 1)
    assert [c for _, c in records] == [5, 1, 5]  # the UDP packet does not cut flow a in two


def test_interleaved_flows_each_make_one_record() -> None:
    a = segments(V4, 8 * 1000, 1000)
    b = segments(V6, 8 * 1000, 1000)
    c = segments(V4B, 8 * 1000, 1000, seq=5, ip_id=90)
    packets = [p for trio in zip(a, b, c) for p in trio]
    records = check_round_trip(packets)
    assert [n for _, n in records] == [8, 8, 8]


def test_a_gap_splits_a_flow_and_the_late_segment_stays_alone() -> None:
    a = segments(V4, 10 * 1000, 1000)
    records = check_round_trip(a[:4] + a[5:] + [a[4]])  # a[4] is late (reordered)
    assert [n for _, n in records] == [4, 5, 1]
    records = check_round_trip(a[:4] + a[5:])  # a[4] is lost
    assert [n for _, n in records] == [4, 5]


def test_a_flow_control_packet_ends_its_group() -> None:
    a = segments(V4, 4 * 1000, 1000)
    rst = bytearray(a[2][:40])
    rst[2:4] = (40).to_bytes(2, "big")
    rst[33] = 0x04  # RST
    records = check_round_trip(a[:2] + [bytes(rst)] + a[2:])
    assert [n for _, n in records] == [2, 1, 2]


def test_gaps_and_reordering_are_not_merged() -> None:
    a = segments(V4, 6 * 1000, 1000)
    records = check_round_trip([a[0], a[2], a[1], a[3], a[4], a[5]])
    assert sum(c for _, c in records) == 6 and len(records) >= 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([V4, V6]), st.integers(1, 20_000), st.integers(500, 1400)), min_size=1,
                max_size=4), st.randoms(use_true_random=False))
def test_any_mix_round_trips(flows: list[tuple[tuple[str, str], int, int]], rng: random.Random) -> None:
    packets: list[bytes] = []
    for addrs, size, gso in flows:
        packets += segments(addrs, size, gso, seq=rng.randrange(2**32), ip_id=rng.randrange(2**16))
    if rng.random() < 0.5 and len(packets) > 2:
        i = rng.randrange(len(packets) - 1)
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    check_round_trip(packets)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([V4, V6, V4B, V6B]), st.integers(1, 30_000), st.integers(500, 1400)),
               min_size=1, max_size=4),
       st.randoms(use_true_random=False), st.floats(0, 0.3))
def test_any_arrival_order_and_loss_yields_the_arrived_packets_each_once(
        flows: list[tuple[tuple[str, str], int, int]], rng: random.Random, loss: float) -> None:
    """What the datagram path hands over after loss and reordering: any order, any subset."""
    packets: list[bytes] = []
    for addrs, size, gso in flows:
        packets += segments(addrs, size, gso, seq=rng.randrange(2**32), ip_id=rng.randrange(2**16))
    packets = [p for p in packets if rng.random() >= loss]
    if rng.random() < 0.5:
        rng.shuffle(packets)
    else:  # a few late packets, as the WAN emulator's reordering makes them
        for _ in range(rng.randrange(4)):
            if len(packets) > 2:
                packets.insert(rng.randrange(len(packets)), packets.pop(rng.randrange(len(packets))))
    check_round_trip(packets)


def _with_checksums(packet: bytes) -> bytes:
    """``packet`` with its IPv4 header and TCP checksums recomputed (after a test changed a field)."""
    out = bytearray(packet)
    l4 = 20 if packet[0] == 0x45 else 40
    if l4 == 20:
        out[10:12] = b"\0\0"
        out[10:12] = (0xFFFF - int.from_bytes(out[:20], "big") % 0xFFFF).to_bytes(2, "big")
        pseudo = out[12:20] + bytes([0, 6]) + (len(out) - 20).to_bytes(2, "big")
    else:
        pseudo = out[8:40] + (len(out) - 40).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    out[l4 + 16 : l4 + 18] = b"\0\0"
    total = int.from_bytes(pseudo, "big") % 0xFFFF
    body = bytes(out[l4:]) + (b"\0" if len(out[l4:]) & 1 else b"")
    total = (total + int.from_bytes(body, "big") % 0xFFFF) % 0xFFFF
    out[l4 + 16 : l4 + 18] = (0xFFFF - total).to_bytes(2, "big")
    assert checksum_ok(bytes(out))
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([V4, V6]), st.integers(3, 12), st.data())
def test_a_segment_differing_in_a_repeated_header_field_is_never_merged(
        addrs: tuple[str, str], count: int, data: st.DataObject) -> None:
    """Ack, window, urgent pointer, options, TOS/DF/TTL or class/flow label/hop limit differ in one segment:
    the records still cut back into exactly the packets that came (a merged one would take the first's)."""
    packets = segments(addrs, count * 1000, 1000, tcp_options=b"\x01\x01\x08\x0a" + bytes(8))
    l4 = 20 if addrs is V4 else 40
    fields = [l4 + i for i in (8, 9, 10, 11, 14, 15, 18, 19, 20, 23, 31)]
    fields += [1, 8] if addrs is V4 else [1, 2, 3, 7]
    victim = data.draw(st.integers(1, len(packets) - 1), label="segment")
    offset = data.draw(st.sampled_from(fields), label="offset")
    changed = bytearray(packets[victim])
    if addrs is V4 and data.draw(st.booleans(), label="df instead"):
        changed[6] ^= 0x40
    else:
        changed[offset] ^= data.draw(st.integers(1, 255), label="xor")
    packets[victim] = _with_checksums(bytes(changed))
    records = check_round_trip(packets)
    assert len(records) >= 2
