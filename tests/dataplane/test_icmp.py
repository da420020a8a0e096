"""ICMP "packet too big" answers (p2pvpn.dataplane.icmp), checked field by field against the RFCs."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from p2pvpn.dataplane.icmp import TokenBucket, too_big_reply
from p2pvpn.dataplane.packet import checksum as _checksum
from p2pvpn.testing.packets import udp4, udp6

A4, B4 = "100.64.0.2", "100.64.0.3"
A6, B6 = "fd00::2", "fd00::3"


def with_df(packet: bytes, df: bool = True, fragment_offset: int = 0) -> bytes:
    flags = (0x4000 if df else 0) | fragment_offset
    header = packet[:6] + struct.pack("!H", flags) + packet[8:10] + b"\x00\x00" + packet[12:20]
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + packet[20:]


def test_ipv4_fragmentation_needed_goes_back_to_the_sender_with_the_mtu() -> None:
    original = with_df(udp4(A4, B4, b"x" * 1472))
    reply = too_big_reply(original, 1400)
    assert reply is not None
    assert reply[0] == 0x45 and reply[9] == 1 and _checksum(reply[:20]) == 0
    assert reply[12:16] == ipaddress.IPv4Address(B4).packed  # "from" the destination, not a martian
    assert reply[16:20] == ipaddress.IPv4Address(A4).packed
    assert struct.unpack_from("!H", reply, 2)[0] == len(reply) <= 576
    icmp = reply[20:]
    assert icmp[0] == 3 and icmp[1] == 4 and _checksum(icmp) == 0
    assert struct.unpack_from("!H", icmp, 6)[0] == 1400  # next-hop MTU (RFC 1191)
    assert original.startswith(icmp[8:]) and len(icmp[8:]) >= 28  # header + 8 bytes quoted at least


def test_ipv6_packet_too_big_goes_back_to_the_sender_with_the_mtu() -> None:
    original = udp6(A6, B6, b"y" * 1452)
    reply = too_big_reply(original, 1400)
    assert reply is not None
    assert reply[0] >> 4 == 6 and reply[6] == 58
    assert reply[8:24] == ipaddress.IPv6Address(B6).packed and reply[24:40] == ipaddress.IPv6Address(A6).packed
    assert struct.unpack_from("!H", reply, 4)[0] == len(reply) - 40 and len(reply) <= 1280
    icmp = reply[40:]
    pseudo = reply[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert icmp[0] == 2 and icmp[1] == 0 and _checksum(pseudo + icmp) == 0
    assert struct.unpack_from("!I", icmp, 4)[0] == 1400
    assert original.startswith(icmp[8:])


def test_no_answer_where_none_is_due() -> None:
    assert too_big_reply(with_df(udp4(A4, B4, b"x" * 1472), df=False), 1400) is None  # may fragment
    assert too_big_reply(with_df(udp4(A4, B4, b"x" * 1472), fragment_offset=100), 1400) is None
    assert too_big_reply(with_df(udp4("0.0.0.0", B4, b"x" * 1472)), 1400) is None
    error4 = too_big_reply(with_df(udp4(A4, B4, b"x" * 1472)), 1400)
    assert error4 is not None and too_big_reply(with_df(error4), 576) is None  # never about an error
    error6 = too_big_reply(udp6(A6, B6, b"y" * 1452), 1400)
    assert error6 is not None and too_big_reply(error6, 1280) is None
    assert too_big_reply(udp6("::", B6, b"y" * 1452), 1400) is None
    assert too_big_reply(b"", 1400) is None and too_big_reply(b"\x45" + bytes(10), 1400) is None


def test_the_mtu_field_never_goes_below_the_protocol_minimum() -> None:
    reply6 = too_big_reply(udp6(A6, B6, b"y" * 1452), 1000)
    assert reply6 is not None and struct.unpack_from("!I", reply6, 44)[0] == 1280


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=70000))
def test_garbage_never_raises(packet: bytes, mtu: int) -> None:
    reply = too_big_reply(packet, mtu)
    assert reply is None or reply[0] >> 4 in (4, 6)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False and bucket.take(0.1) is True  # one token per 0.1 s
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


async def test_egress_reports_each_packet_over_the_peers_mtu() -> None:
    import trio

    from p2pvpn.dataplane.egress import send_to_peer
    from test_offload_paths import make_peer

    peer = make_peer(mtu=1400)
    small, big = with_df(udp4(A4, B4, b"s" * 100)), with_df(udp4(A4, B4, b"b" * 1472))
    for packet in (small, big):
        assert peer.queue.put(packet)
    told: list[tuple[bytes, int]] = []
    written: list[bytes] = []

    async def write(frame: bytes) -> None:
        written.append(frame)

    with trio.move_on_after(0.2):
        await send_to_peer(peer, write, too_big=lambda p, mtu: told.append((p, mtu)))
    assert told == [(big, 1400)]
    assert peer.stats.drops["too_big"] == 1 and len(written) == 1  # the small one still went
