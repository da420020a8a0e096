"""Fuzz target: the ICMP "packet too big" builder, ``p2pvpn.dataplane.icmp.too_big_reply``.

Input: 4 bytes of MTU (the peer's Hello MTU is a uint32), then the packet
that did not fit, arbitrary bytes as the TUN may hand them over.
Contract: the result is None or one well-formed ICMP error, and no
exception escapes (the builder has no error type: None is its refusal).
Well formed means: the IP header is right (version, length, checksum, TTL,
protocol), the message is a "fragmentation needed" / "packet too big" with
a correct checksum, the announced MTU is the clamped one, it goes back to
the packet's source from its destination, quotes the packet's start and
fits the minimum MTU. The RFC 1812/4443 rules are checked too: never an
answer to an ICMP error, to an IPv4 packet without DF or to a later
fragment, or to a source nobody can be told at.
"""

from __future__ import annotations

import struct

from p2pvpn.dataplane.icmp import IPV4_MIN_MTU, IPV6_MIN_MTU, too_big_reply
from p2pvpn.dataplane.packet import checksum
from p2pvpn.testing.packets import udp4, udp6

EXPECTED: tuple[type[BaseException], ...] = ()
MAX_LEN = 2048
_V4_ERRORS = {3, 4, 5, 11, 12}


def _with_df(packet: bytes) -> bytes:
    header = packet[:6] + b"\x40\x00" + packet[8:10] + b"\x00\x00" + packet[12:20]
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + packet[20:]


def seeds() -> list[bytes]:
    mtu = struct.pack("!I", 1280)
    big4 = _with_df(udp4("100.64.0.2", "100.64.0.3", b"x" * 1400))
    big6 = udp6("fd00::2", "fd00::3", b"x" * 1400)
    icmp4 = bytes.fromhex("4500001c0000400040010e0a646fbccd6441a7590800e5ca12340001")
    icmp6 = bytes.fromhex(
        "6000000000083a40fd1f6ae60c5b0000be309543b4d8919efd1f6ae60c5b000068d2ce3563f3210080002ede12340001"
    )
    return [mtu + big4, mtu + big6, mtu + icmp4, mtu + icmp6, struct.pack("!I", 70000) + big6]


def _check_v4(packet: bytes, mtu: int, reply: bytes) -> None:
    ihl = (packet[0] & 0x0F) * 4
    flags_fragment = struct.unpack_from("!H", packet, 6)[0]
    assert flags_fragment & 0x4000 and flags_fragment & 0x1FFF == 0, "answered a packet without DF or a fragment"
    assert not (packet[9] == 1 and len(packet) > ihl and packet[ihl] in _V4_ERRORS), "answered an ICMP error"
    assert 0 < packet[12] < 224, "answered an unanswerable source"
    assert reply[0] == 0x45 and len(reply) <= 576
    total, _, _, ttl, protocol = struct.unpack_from("!HHHBB", reply, 2)
    assert total == len(reply) and ttl > 0 and protocol == 1
    assert checksum(reply[:20]) == 0, "bad IPv4 header checksum"
    assert reply[12:16] == packet[16:20] and reply[16:20] == packet[12:16], "not from the destination back to the source"
    icmp = reply[20:]
    assert icmp[:2] == b"\x03\x04" and checksum(icmp) == 0, "not a valid fragmentation-needed message"
    assert struct.unpack_from("!H", icmp, 6)[0] == max(IPV4_MIN_MTU, min(mtu, 0xFFFF))
    assert icmp[8:] == packet[: len(icmp) - 8] and len(icmp) - 8 >= min(len(packet), ihl + 8)


def _check_v6(packet: bytes, mtu: int, reply: bytes) -> None:
    assert not (packet[6] == 58 and len(packet) > 40 and packet[40] < 128), "answered an ICMPv6 error"
    assert packet[8] != 0xFF and packet[8:24] != bytes(16), "answered an unanswerable source"
    assert reply[0] >> 4 == 6 and len(reply) <= IPV6_MIN_MTU
    payload_len, next_header, hop_limit = struct.unpack_from("!HBB", reply, 4)
    assert payload_len == len(reply) - 40 and next_header == 58 and hop_limit > 0
    assert reply[8:24] == packet[24:40] and reply[24:40] == packet[8:24], "not from the destination back to the source"
    icmp = reply[40:]
    pseudo = reply[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert icmp[:2] == b"\x02\x00" and checksum(pseudo + icmp) == 0, "not a valid packet-too-big message"
    assert struct.unpack_from("!I", icmp, 4)[0] == max(IPV6_MIN_MTU, mtu)
    assert icmp[8:] == packet[: len(icmp) - 8] and len(icmp) - 8 >= min(len(packet), 48)


def one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    mtu = int.from_bytes(data[:4], "big")
    packet = data[4:]
    reply = too_big_reply(packet, mtu)
    if reply is None:
        return
    assert type(reply) is bytes
    version = packet[0] >> 4
    if version == 4:
        _check_v4(packet, mtu, reply)
    elif version == 6:
        _check_v6(packet, mtu, reply)
    else:
        raise AssertionError(f"answered an IPv{version} packet")
