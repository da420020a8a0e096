"""Fuzz target: the tunnel wire codec, ``p2pvpn.wire.codec``.

Contract: a ``FrameDecoder`` fed any bytes returns frames or raises
``ProtocolError``, and only that; once failed it stays failed. Like h11's
harness, every input is decoded twice, fed whole and fed in small pieces
(one byte at a time for its first 128 bytes, then 1, 2, ..., 32 bytes in
turn), and both must give the same frames and the same error. Every frame
that decodes must encode again (``encode`` and the hot-path twins
``encode_data``/``encode_offload_data`` byte for byte) and decode back to
itself.
"""

from __future__ import annotations

import ipaddress

from p2pvpn.wire.codec import (
    MAX_FRAME_LEN,
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
    encode_offload_data,
)

EXPECTED = (ProtocolError,)
MAX_LEN = 2048
BYTEWISE = 128

# The golden frames of docs/protocol.md (tests/wire/test_codec_messages.py).
_ICMP4 = bytes.fromhex("4500001c0000400040010e0a646fbccd6441a7590800e5ca12340001")
_ICMP6 = bytes.fromhex(
    "6000000000083a40fd1f6ae60c5b0000be309543b4d8919efd1f6ae60c5b000068d2ce3563f3210080002ede12340001"
)
_OFFLOAD_TCP4 = bytes.fromhex(
    "01012800020014001000" "4500002c0001400040060df4646fbccd6441a759" "9c40145100000001000000015018ffff2cf60000" "61626364"
)
_GOLDEN: tuple[Frame, ...] = (
    Hello(1, "default", ipaddress.IPv4Address("100.111.188.205"),
          ipaddress.IPv6Address("fd1f:6ae6:c5b:0:be30:9543:b4d8:919e"), 1420),
    Hello(1, "lab", ipaddress.IPv4Address("100.106.251.185"),
          ipaddress.IPv6Address("fd9b:f87d:26e8:0:996b:c147:83aa:9750"), 1280, ("example", "gso/1"), 1),
    Data((_ICMP4, _ICMP6)),
    Data(offload_packets=(_OFFLOAD_TCP4,)),
    Keepalive(1),
    Keepalive(1, reply=True),
    Keepalive(0),
    Close(CloseCode.DUPLICATE, "duplicate tunnel"),
    Close(CloseCode.NORMAL),
    Close(99, "a code from a newer peer"),
)  # fmt: skip


def seeds() -> list[bytes]:
    """Each golden frame alone, and a stream of all of them (a session's worth of frames)."""
    wires = [encode(frame) for frame in _GOLDEN]
    return [*wires, b"".join(wires)]


def _decode(chunks: list[bytes]) -> tuple[list[Frame], str | None]:
    """Feed ``chunks`` in order, draining after each; the frames and the error text, if any."""
    decoder = FrameDecoder()
    frames: list[Frame] = []
    feed, next_frame, append = decoder.feed, decoder.next_frame, frames.append  # the bytewise pass is the hot loop
    try:
        for chunk in chunks:
            feed(chunk)
            while (frame := next_frame()) is not None:
                append(frame)
    except ProtocolError as error:
        _assert_stays_failed(decoder)
        return frames, str(error)
    assert decoder.buffered <= MAX_FRAME_LEN + 3
    return frames, None


def _assert_stays_failed(decoder: FrameDecoder) -> None:
    for call in (lambda: decoder.feed(b"\x00"), decoder.next_frame):
        try:
            call()
        except ProtocolError:
            continue
        raise AssertionError("a failed FrameDecoder accepted more input")


def _assert_round_trip(frame: Frame) -> None:
    wire = encode(frame)  # whatever decodes must encode: a ProtocolError here is a crash
    decoder = FrameDecoder()
    decoder.feed(wire)
    assert list(decoder) == [frame] and decoder.buffered == 0, frame
    if isinstance(frame, Data):
        fast = encode_data(list(frame.packets)) if frame.packets else encode_offload_data(list(frame.offload_packets))
        assert fast == wire, "encode_data/encode_offload_data differ from encode"


def _pieces(data: bytes) -> list[bytes]:
    """``data`` one byte at a time for its first BYTEWISE bytes, then in pieces of 1, 2, ..., 32 bytes in turn.

    Every read split of the first frames' prefixes and bodies, and varied
    splits after them: feeding all of a 2 kB input byte by byte costs ten
    times as much, which a million inputs on a shared machine cannot afford.
    """
    pieces = [data[i : i + 1] for i in range(min(len(data), BYTEWISE))]
    start, size = BYTEWISE, 1
    while start < len(data):
        pieces.append(data[start : start + size])
        start += size
        size = size % 32 + 1
    return pieces


def one_input(data: bytes) -> None:
    whole = _decode([data])
    split = _decode(_pieces(data))
    assert whole == split, (whole, split)
    for frame in whole[0]:
        _assert_round_trip(frame)
