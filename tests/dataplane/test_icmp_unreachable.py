"""ICMP "host unreachable" for on-demand destinations nobody holds (p2pvpn.dataplane.icmp.unreachable_reply)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from p2pvpn.dataplane.icmp import unreachable_reply
from p2pvpn.dataplane.packet import checksum as _checksum
from p2pvpn.testing.packets import udp4, udp6

A4, B4 = "100.64.0.1", "100.64.0.2"
A6, B6 = "fd00::1", "fd00::2"


def test_ipv4_host_unreachable_from_the_destination_to_the_sender() -> None:
    original = udp4(A4, B4, b"x" * 1000)
    reply = unreachable_reply(original)
    assert reply is not None and _checksum(reply[:20]) == 0 and reply[9] == 1
    assert reply[12:16] == ipaddress.IPv4Address(B4).packed and reply[16:20] == ipaddress.IPv4Address(A4).packed
    assert struct.unpack_from("!H", reply, 2)[0] == len(reply) <= 576
    icmp = reply[20:]
    assert icmp[0] == 3 and icmp[1] == 1 and _checksum(icmp) == 0
    assert original.startswith(icmp[8:])


def test_ipv6_address_unreachable_from_the_destination_to_the_sender() -> None:
    original = udp6(A6, B6, b"y" * 1452)
    reply = unreachable_reply(original)
    assert reply is not None and reply[6] == 58 and len(reply) <= 1280
    assert reply[8:24] == ipaddress.IPv6Address(B6).packed and reply[24:40] == ipaddress.IPv6Address(A6).packed
    icmp = reply[40:]
    pseudo = reply[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert icmp[0] == 1 and icmp[1] == 3 and _checksum(pseudo + icmp) == 0
    assert original.startswith(icmp[8:])


def test_never_about_an_error_nor_to_nobody() -> None:
    error4 = unreachable_reply(udp4(A4, B4, b"x"))
    assert error4 is not None and unreachable_reply(error4) is None
    error6 = unreachable_reply(udp6(A6, B6, b"y"))
    assert error6 is not None and unreachable_reply(error6) is None
    assert unreachable_reply(udp4("0.0.0.0", B4, b"x")) is None
    assert unreachable_reply(udp6("::", B6, b"y")) is None
    assert unreachable_reply(b"") is None


@given(st.binary(max_size=2000))
def test_garbage_never_raises(packet: bytes) -> None:
    reply = unreachable_reply(packet)
    assert reply is None or reply[0] >> 4 in (4, 6)
