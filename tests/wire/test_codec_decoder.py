"""FrameDecoder: streaming behaviour, every malformed-input case, the failed state.

Invalid bodies are built with the generated protobuf types (a peer with a
buggy or hostile encoder would produce exactly these) or as raw bytes.
"""

from __future__ import annotations

import ipaddress

import pytest

from p2pvpn.wire import tunnel_pb2
from p2pvpn.wire.codec import (
    MAX_CAPABILITIES,
    MAX_CAPABILITY_LEN,
    MAX_FRAME_LEN,
    MAX_NETWORK_LEN,
    MAX_OFFLOAD_PACKET_LEN,
    MAX_PACKET_LEN,
    MAX_PACKETS_PER_FRAME,
    MAX_REASON_LEN,
    Close,
    CloseCode,
    Data,
    Frame,
    FrameDecoder,
    Hello,
    Keepalive,
    ProtocolError,
    encode,
    encode_data,
)

# The bound the decoder promises for a drained buffer (the brief allows +10).
BOUND = MAX_FRAME_LEN + 10

HELLO = Hello(
    version=1,
    network="default",
    ipv4=ipaddress.IPv4Address("100.64.0.1"),
    ipv6=ipaddress.IPv6Address("fd00::1"),
    mtu=1420,
)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def framed(body: bytes) -> bytes:
    return uvarint(len(body)) + body


def pb_hello(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "version": 1,
        "network": "default",
        "ipv4": bytes(4),
        "ipv6": bytes(16),
        "mtu": 1420,
    }
    fields.update(changes)
    return framed(tunnel_pb2.Frame(hello=tunnel_pb2.Hello(**fields)).SerializeToString())  # type: ignore[arg-type]


def pb_data(packets: list[bytes]) -> bytes:
    message = tunnel_pb2.Frame()
    message.data.packets.extend(packets)
    message.data.SetInParent()
    return framed(message.SerializeToString())


def pb_offload_data(records: list[bytes], packets: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    message = tunnel_pb2.Frame()
    message.data.offload_packets.extend(records)
    message.data.packets.extend(packets)
    message.data.SetInParent()
    return framed(message.SerializeToString())


def fail(wire: bytes, message: str) -> FrameDecoder:
    """Feed ``wire`` and check the decoder fails with ``message`` (a regex)."""
    decoder = FrameDecoder()
    decoder.feed(wire)
    with pytest.raises(ProtocolError, match=message) as caught:
        list(decoder)
    assert type(caught.value) is ProtocolError
    assert caught.value.code is CloseCode.PROTOCOL_ERROR
    assert "\n" not in str(caught.value)
    return decoder


# --------------------------------------------------------------------------- #
# Streaming.


def test_empty_decoder_needs_data() -> None:
    decoder = FrameDecoder()
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    decoder.feed(b"")
    assert decoder.next_frame() is None


def test_partial_frame_waits_then_completes() -> None:
    wire = encode(HELLO)
    decoder = FrameDecoder()
    decoder.feed(wire[:1])
    assert decoder.next_frame() is None
    decoder.feed(wire[1:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == len(wire) - 1
    decoder.feed(wire[-1:])
    assert decoder.next_frame() == HELLO
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_many_frames_in_one_read_and_a_tail() -> None:
    frames: list[Frame] = [HELLO, Keepalive(1), Data((b"\x45" * 100,)), Keepalive(1, reply=True), Close(0, "bye")]
    wire = b"".join(map(encode, frames))
    decoder = FrameDecoder()
    decoder.feed(wire + encode(Keepalive(2))[:2])
    assert list(decoder) == frames
    assert decoder.buffered == 2
    decoder.feed(encode(Keepalive(2))[2:])
    assert list(decoder.frames()) == [Keepalive(2)]


def test_every_split_point_gives_the_same_frames() -> None:
    frames: list[Frame] = [HELLO, Data((b"\x45" * 300, b"\x60" * 20)), Keepalive(300)]
    wire = b"".join(map(encode, frames))
    for cut in range(len(wire) + 1):
        decoder = FrameDecoder()
        decoder.feed(wire[:cut])
        got = list(decoder)
        decoder.feed(wire[cut:])
        got += list(decoder)
        assert got == frames, cut


def test_feed_copies_mutable_input() -> None:
    wire = bytearray(encode(Keepalive(5)))
    decoder = FrameDecoder()
    decoder.feed(wire[:3])
    decoder.feed(memoryview(wire)[3:])
    wire[:] = b"\x00" * len(wire)  # the caller reuses its read buffer
    assert decoder.next_frame() == Keepalive(5)

    whole = bytearray(encode(Keepalive(6)))
    decoder.feed(whole)
    whole[:] = b"\x00" * len(whole)
    assert decoder.next_frame() == Keepalive(6)


def test_a_long_stream_of_small_frames_is_linear() -> None:
    # 20k frames in one read: quadratic buffer copying would take minutes.
    count = 20_000
    wire = encode(Keepalive(1)) * count
    decoder = FrameDecoder()
    decoder.feed(wire)
    assert sum(1 for _ in decoder) == count
    # and the same stream in 1000-byte reads
    for i in range(0, len(wire), 1000):
        decoder.feed(wire[i : i + 1000])
        for frame in decoder:
            assert frame == Keepalive(1)
    assert decoder.buffered == 0


def test_largest_frame_is_accepted_and_buffered_within_the_bound() -> None:
    # A Data frame of exactly MAX_FRAME_LEN bytes.
    packets = [b"\x45" * MAX_PACKET_LEN] * 3
    used = len(encode_data(packets)) - 3
    last = MAX_FRAME_LEN - used - 4  # 1 tag byte + 3 length bytes for the 4th packet
    packets.append(b"\x45" * last)
    wire = encode_data(packets)
    assert len(wire) == 3 + MAX_FRAME_LEN
    assert wire == encode(Data(packets))
    decoder = FrameDecoder()
    decoder.feed(wire[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == len(wire) - 1 <= BOUND
    decoder.feed(wire[-1:])
    assert decoder.next_frame() == Data(tuple(packets))


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    # Keepalive{seq=9, field 15 (varint) = 1}; Hello with an unknown field 20.
    keepalive = framed(b"\x1a\x04\x08\x09\x78\x01")
    hello_body = tunnel_pb2.Frame(
        hello=tunnel_pb2.Hello(version=1, network="n", ipv4=bytes(4), ipv6=bytes(16), mtu=1280)
    ).SerializeToString()
    # Append field 20 (LEN) inside the Hello: rewrite the Hello's length.
    inner = hello_body[2:] + b"\xa2\x01\x02hi"
    hello = framed(b"\x0a" + uvarint(len(inner)) + inner)
    decoder = FrameDecoder()
    decoder.feed(keepalive + hello)
    assert list(decoder) == [
        Keepalive(9),
        Hello(1, "n", ipaddress.IPv4Address(0), ipaddress.IPv6Address(0), 1280),
    ]


# --------------------------------------------------------------------------- #
# Length prefix errors: refused before the body is buffered.


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (uvarint(MAX_FRAME_LEN + 1), "frame length 262145 is over"),
        (uvarint(2**21 - 1), "frame length 2097151 is over"),  # largest 3-byte value
        (b"\x80\x80\x80", "announces more than 262144 bytes"),  # 4th byte would be needed
        (b"\xff" * 10 + b"\x01", "announces more than"),  # longer than 10 bytes
        (uvarint(2**64), "announces more than"),  # more than 64 bits
        (b"\x80\x00", "not a minimally encoded"),
        (b"\x81\x80\x00", "not a minimally encoded"),
    ],
)
def test_bad_length_prefix(prefix: bytes, message: str) -> None:
    fail(prefix, message)


def test_oversized_prefix_fails_without_waiting_for_more_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff")  # so far: at least 16383, could still be fine
    assert decoder.next_frame() is None
    decoder.feed(b"\xff")  # now 3 continuation bytes: >= 2**21
    with pytest.raises(ProtocolError):
        decoder.next_frame()


# --------------------------------------------------------------------------- #
# Body errors.


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x00", "no known message"),  # empty Frame
        (framed(b"\x32\x00"), "no known message"),  # only an unknown field 6
        (framed(b"\xff\xff\xff"), "not a valid protobuf Frame"),
        (framed(b"\x12\x05\x0a\x03ab"), "not a valid protobuf Frame"),  # truncated packet
        (framed(b"\x12"), "not a valid protobuf Frame"),  # tag without its length
        (framed(b"\x1a\x02\x08"), "not a valid protobuf Frame"),  # truncated varint
        (framed(b"\x0b"), "not a valid protobuf Frame"),  # group wire type
    ],
)
def test_body_that_is_not_a_frame(wire: bytes, message: str) -> None:
    fail(wire, message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ipv4": b""}, "ipv4 is 0 bytes, expected 4"),
        ({"ipv4": bytes(3)}, "ipv4 is 3 bytes, expected 4"),
        ({"ipv4": bytes(16)}, "ipv4 is 16 bytes, expected 4"),
        ({"ipv6": bytes(4)}, "ipv6 is 4 bytes, expected 16"),
        ({"ipv6": bytes(17)}, "ipv6 is 17 bytes, expected 16"),
        ({"network": "n" * (MAX_NETWORK_LEN + 1)}, "network name is over the 64-byte limit"),
        ({"network": "é" * 33}, "network name is over"),
        ({"capabilities": ["c"] * (MAX_CAPABILITIES + 1)}, "33 capabilities"),
        ({"capabilities": ["c" * (MAX_CAPABILITY_LEN + 1)]}, "capability is over"),
    ],
)
def test_bad_hello(changes: dict[str, object], message: str) -> None:
    fail(pb_hello(**changes), message)


def test_hello_with_invalid_utf8_network() -> None:
    # field 2 (network) holding 0xff 0xfe, then valid ipv4/ipv6.
    inner = b"\x12\x02\xff\xfe" + b"\x1a\x04" + bytes(4) + b"\x22\x10" + bytes(16)
    fail(framed(b"\x0a" + uvarint(len(inner)) + inner), "not a valid protobuf Frame")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x02\x12\x00", "0 packets"),
        (pb_data([b"x"] * (MAX_PACKETS_PER_FRAME + 1)), "1025 packets"),
        (pb_data([b"x", b""]), "empty packet"),
        (pb_data([b""]), "empty packet"),
        (pb_data([b"x" * (MAX_PACKET_LEN + 1)]), "packet is 65536 bytes"),
        (pb_data([b"x", b"y" * (MAX_PACKET_LEN + 100)]), "packet is 65635 bytes"),
        (pb_offload_data([b"r" * 11], [b"x"]), "both packets and offload_packets"),
        (pb_offload_data([b"r" * 11] * (MAX_PACKETS_PER_FRAME + 1)), "1025 packets"),
        (pb_offload_data([b"r" * 11, b"r" * 10]), "offload packet of 10 bytes has no IP packet"),
        (pb_offload_data([b""]), "offload packet of 0 bytes"),
        (pb_offload_data([b"r" * (MAX_OFFLOAD_PACKET_LEN + 1)]), "offload packet is 65546 bytes"),
    ],
)
def test_bad_data(wire: bytes, message: str) -> None:
    fail(wire, message)


def test_close_reason_too_long() -> None:
    wire = framed(tunnel_pb2.Frame(close=tunnel_pb2.Close(code=0, reason="r" * (MAX_REASON_LEN + 1))).SerializeToString())
    fail(wire, "Close reason is over the 256-byte limit")


# --------------------------------------------------------------------------- #
# After an error the decoder stays failed (h11's ERROR state).


def test_failed_decoder_stays_failed() -> None:
    good = encode(Keepalive(1))
    decoder = fail(good + b"\x00" + good, "no known message")
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError, match="already failed: frame carries no known message"):
        decoder.next_frame()
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(good)
    with pytest.raises(ProtocolError, match="already failed"):
        list(decoder)


def test_frames_before_the_bad_one_are_delivered() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(Keepalive(1)) + encode(Keepalive(2)) + b"\x80\x00")
    assert decoder.next_frame() == Keepalive(1)
    assert decoder.next_frame() == Keepalive(2)
    with pytest.raises(ProtocolError):
        decoder.next_frame()
