"""IPv4 fragmentation (p2pvpn.dataplane.fragment) against a reference reassembler, and in egress."""

from __future__ import annotations

import struct
from collections import Counter

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.dataplane.egress import send_to_peer
from p2pvpn.dataplane.fragment import IP_DF, IP_MF, fragment_ipv4, needs_df
from p2pvpn.dataplane.packet import checksum
from p2pvpn.testing.packets import udp4, udp6


def without_df(packet: bytes, ident: int = 0x1234, options: bytes = b"") -> bytes:
    """``packet`` (IPv4, no options) with DF cleared, an ID, and ``options`` added to its header."""
    ihl = 20 + len(options)
    header = bytearray(packet[:20] + options)
    header[0] = 0x40 | (ihl // 4)
    struct.pack_into("!HHH", header, 2, len(packet) + len(options), ident, 0)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header) + packet[20:]


def reassemble(fragments: list[bytes]) -> tuple[bytes, bytes]:
    """Reference (RFC 815 style, unordered): the original header-less payload and the first header."""
    data = bytearray()
    filled: set[int] = set()
    end = None
    first = b""
    for frag in fragments:
        ihl = (frag[0] & 0x0F) * 4
        assert checksum(frag[:ihl]) == 0, "bad header checksum"
        total, flags = struct.unpack_from("!H2xH", frag, 2)
        assert total == len(frag)
        offset = (flags & 0x1FFF) * 8
        payload = frag[ihl:]
        if offset == 0:
            first = frag[:ihl]
        if not flags & IP_MF:
            end = offset + len(payload)
        else:
            assert len(payload) % 8 == 0, "a non-last fragment must carry a multiple of 8 bytes"
        if len(data) < offset + len(payload):
            data.extend(b"\0" * (offset + len(payload) - len(data)))
        data[offset : offset + len(payload)] = payload
        filled.update(range(offset, offset + len(payload)))
    assert end is not None and filled == set(range(end)), "holes or no last fragment"
    return bytes(data[:end]), first


def test_a_1400_byte_packet_into_1280() -> None:
    packet = without_df(udp4("100.64.0.1", "100.64.0.2", b"p" * 1372))
    assert len(packet) == 1400
    fragments = fragment_ipv4(packet, 1280)
    assert fragments is not None and [len(f) for f in fragments] == [1276, 144]
    payload, first = reassemble(fragments)
    assert payload == packet[20:] and first[12:20] == packet[12:20]
    ids = {struct.unpack_from("!H", f, 4)[0] for f in fragments}
    assert ids == {0x1234}


def test_df_ipv6_and_garbage_are_not_cut() -> None:
    assert fragment_ipv4(udp4("100.64.0.1", "100.64.0.2", b"x" * 1500), 1280) is None  # DF set
    assert needs_df(udp4("100.64.0.1", "100.64.0.2", b"x"))
    assert fragment_ipv4(udp6("fd00::1", "fd00::2", b"x" * 1500), 1280) is None
    assert fragment_ipv4(b"\x45" + b"\0" * 10, 1280) is None
    bad_length = bytearray(without_df(udp4("100.64.0.1", "100.64.0.2", b"x" * 100)))
    struct.pack_into("!H", bad_length, 2, 5000)  # longer than the buffer
    assert fragment_ipv4(bytes(bad_length), 68) is None
    assert fragment_ipv4(without_df(udp4("100.64.0.1", "100.64.0.2", b"x" * 100)), 60) is None  # below 68


def test_only_copied_options_repeat() -> None:
    # Record Route (7, not copied), then Security-like option 130 (copied), then EOL padding.
    options = bytes([7, 7, 4, 0, 0, 0, 0, 130, 4, 0xAB, 0xCD, 0, 0, 0, 0, 0])[:12]
    packet = without_df(udp4("100.64.0.1", "100.64.0.2", b"o" * 600), options=options)
    fragments = fragment_ipv4(packet, 300)
    assert fragments is not None and len(fragments) >= 3
    assert fragments[0][20:32] == options
    for later in fragments[1:]:
        assert (later[0] & 0x0F) * 4 == 24
        assert later[20:24] == bytes([130, 4, 0xAB, 0xCD])
    payload, _ = reassemble(fragments)
    assert payload == packet[32:]


def test_a_fragment_is_fragmented_again() -> None:
    packet = without_df(udp4("100.64.0.1", "100.64.0.2", b"r" * 3000))
    first_pass = fragment_ipv4(packet, 1500)
    assert first_pass is not None
    second_pass = [g for f in first_pass for g in (fragment_ipv4(f, 576) if len(f) > 576 else [f])]
    assert max(map(len, second_pass)) <= 576
    payload, _ = reassemble(second_pass)
    assert payload == packet[20:]
    assert sum(not struct.unpack_from("!H", f, 6)[0] & IP_MF for f in second_pass) == 1


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=9000),
    mtu=st.integers(min_value=68, max_value=9000),
    copied=st.booleans(),
    data=st.data(),
)
def test_fragments_fit_and_reassemble(size: int, mtu: int, copied: bool, data: st.DataObject) -> None:
    options = bytes([0x83, 8]) + data.draw(st.binary(min_size=6, max_size=6)) if copied else b""
    packet = without_df(udp4("100.64.0.1", "100.64.0.2", bytes(i % 251 for i in range(size))), options=options)
    fragments = fragment_ipv4(packet, mtu)
    assert fragments is not None
    assert all(len(f) <= mtu for f in fragments)
    assert all(not struct.unpack_from("!H", f, 6)[0] & IP_DF for f in fragments)
    payload, first = reassemble(list(reversed(fragments)))  # order must not matter
    ihl = 20 + len(options)
    assert payload == packet[ihl:]
    kept = [(0, 2), (4, 6), (8, 10), (12, ihl)]  # version/IHL/TOS, ID, TTL/protocol, addresses and options
    assert [first[a:b] for a, b in kept] == [packet[a:b] for a, b in kept]


async def test_egress_fragments_instead_of_dropping() -> None:
    """send_to_peer: IPv4 without DF over the peer's MTU goes out in fragments; with DF it is too_big."""
    from p2pvpn import addressing
    from p2pvpn.dataplane.peer_queue import PacketQueue
    from p2pvpn.session.peer import Peer
    from p2pvpn.wire.codec import FrameDecoder

    peer = Peer(peer_id=None, addresses=addressing.derive(b"x", "default"), queue=PacketQueue(64), mtu=1280)  # type: ignore[arg-type]
    big = without_df(udp4("100.64.0.1", "100.64.0.2", b"b" * 1372))
    df = udp4("100.64.0.1", "100.64.0.2", b"d" * 1372)
    peer.queue.put(big)
    peer.queue.put(df)
    written: list[bytes] = []
    too_big: Counter[int] = Counter()

    async def write(frame: bytes) -> None:
        written.append(frame)

    with trio.move_on_after(0.5):
        await send_to_peer(peer, write, too_big=lambda packet, mtu: too_big.update([mtu]))
    decoder = FrameDecoder()
    for frame in written:
        decoder.feed(frame)
    packets = [p for f in decoder.frames() for p in f.packets]
    assert len(packets) == 2 and all(len(p) <= 1280 for p in packets)
    assert reassemble(packets)[0] == big[20:]
    assert too_big == {1280: 1} and peer.stats.drops["too_big"] == 1
