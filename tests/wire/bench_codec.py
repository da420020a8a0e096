"""Micro-benchmark of the tunnel hot path: ``python tests/wire/bench_codec.py``.

Not collected by pytest (no ``test_`` prefix). It times encoding and decoding
of a Data frame of 45 x 1400-byte packets (about one 64 KiB batch) and keeps
the evidence for the codec's design choices: ``encode_data`` against the
protobuf runtime, and upb parsing against a hand-written Python parser of
the canonical Data layout (codec.py uses upb because it wins).
"""

from __future__ import annotations

import os
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from p2pvpn.wire import codec  # noqa: E402
from p2pvpn.wire import tunnel_pb2  # noqa: E402

PACKETS = [bytes([i]) * 1400 for i in range(45)]


def hand_parse_data(body: bytes) -> tuple[bytes, ...] | None:
    """Strict parser of the canonical Frame{data{packets...}} layout; None = not canonical."""
    end = len(body)
    if end < 2 or body[0] != 0x12:
        return None
    i = 1
    data_len = 0
    shift = 0
    while True:
        if i >= end or shift > 14:
            return None
        byte = body[i]
        i += 1
        data_len |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if i + data_len != end:
        return None
    packets: list[bytes] = []
    append = packets.append
    while i < end:
        if body[i] != 0x0A:
            return None
        i += 1
        length = 0
        shift = 0
        while True:
            if i >= end or shift > 14:
                return None
            byte = body[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        stop = i + length
        if stop > end:
            return None
        append(body[i:stop])
        i = stop
    return tuple(packets)


def upb_parse_data(body: bytes) -> tuple[bytes, ...]:
    return tuple(tunnel_pb2.Frame.FromString(body).data.packets)


def decode_one(wire: bytes) -> codec.Frame | None:
    decoder = codec.FrameDecoder()
    decoder.feed(wire)
    return decoder.next_frame()


def measure(fn: Callable[[], object], number: int = 2000) -> float:
    """Best of several runs, in microseconds per call (the VM is noisy)."""
    return min(timeit.repeat(fn, number=number, repeat=9)) / number * 1e6


def main() -> None:
    wire = codec.encode_data(PACKETS)
    assert wire == codec.encode(codec.Data(PACKETS))
    body = wire[3:]
    assert hand_parse_data(body) == upb_parse_data(body) == tuple(PACKETS)
    assert decode_one(wire) == codec.Data(tuple(PACKETS))
    print(f"Data frame: {len(PACKETS)} x {len(PACKETS[0])} bytes = {len(wire)} bytes on the wire")
    rows = [
        ("encode_data (hand-built, hot path)", lambda: codec.encode_data(PACKETS)),
        ("encode(Data) (protobuf runtime)", lambda: codec.encode(codec.Data(PACKETS))),
        ("decode: FrameDecoder feed+next_frame", lambda: decode_one(wire)),
        ("  body parse: upb FromString+tuple", lambda: upb_parse_data(body)),
        ("  body parse: hand parser (Python)", lambda: hand_parse_data(body)),
        ("encode_data, 1 x 1400 bytes", lambda: codec.encode_data(PACKETS[:1])),
        ("decode,      1 x 1400 bytes", lambda: decode_one(codec.encode_data(PACKETS[:1]))),
    ]
    for name, fn in rows:
        print(f"{name:40s} {measure(fn):8.2f} us")


if __name__ == "__main__":
    main()
