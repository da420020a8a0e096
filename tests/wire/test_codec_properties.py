"""Properties of the codec over generated frames and generated garbage.

Like h11's fuzz harness, every stream is fed whole, one byte at a time and in
random chunks; whatever the chunking, the frames must be the same. Hostile
input may only ever raise ProtocolError, and a drained decoder never holds
more than the documented bound.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from p2pvpn.wire.codec import (
    MAX_CAPABILITIES,
    MAX_FRAME_LEN,
    MAX_PACKET_LEN,
    Close,
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

BOUND = MAX_FRAME_LEN + 10

# At most 4 UTF-8 bytes per character, so 16 characters always fit in 64 bytes.
names = st.text(max_size=16)
hellos = st.builds(
    Hello,
    version=st.integers(0, 2**32 - 1),
    network=names,
    ipv4=st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    ipv6=st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    mtu=st.integers(0, 2**32 - 1),
    capabilities=st.lists(names, max_size=MAX_CAPABILITIES).map(tuple),
    address_index=st.integers(0, 2**32 - 1),
)
small_packets = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20)
datas = small_packets.map(lambda packets: Data(tuple(packets)))
small_records = st.lists(st.binary(min_size=11, max_size=300), min_size=1, max_size=20)
offload_datas = small_records.map(lambda records: Data(offload_packets=tuple(records)))
keepalives = st.builds(Keepalive, seq=st.integers(0, 2**64 - 1), reply=st.booleans())
closes = st.builds(Close, code=st.integers(0, 2**32 - 1), reason=st.text(max_size=64))
frames = st.one_of(hellos, datas, offload_datas, keepalives, closes)


def feed_in_chunks(wire: bytes, cuts: list[int]) -> list[Frame]:
    """Feed ``wire`` split at ``cuts``, draining after every read like the receive loop."""
    decoder = FrameDecoder()
    out: list[Frame] = []
    start = 0
    for cut in [*sorted(cuts), len(wire)]:
        decoder.feed(wire[start:cut])
        start = cut
        out.extend(decoder)
        assert decoder.buffered <= BOUND
    assert decoder.buffered == 0
    return out


@given(frames)
def test_encode_then_decode_is_identity(frame: Frame) -> None:
    wire = encode(frame)
    assert len(wire) <= MAX_FRAME_LEN + 3
    assert feed_in_chunks(wire, []) == [frame]


@given(st.lists(frames, max_size=8), st.data())
def test_chunking_never_changes_the_frames(sent: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(map(encode, sent))
    whole = feed_in_chunks(wire, [])
    byte_by_byte = feed_in_chunks(wire, list(range(len(wire))))
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    chunked = feed_in_chunks(wire, cuts)
    assert whole == byte_by_byte == chunked == sent


@given(small_packets)
def test_encode_data_is_byte_identical_to_encode(packets: list[bytes]) -> None:
    assert encode_data(packets) == encode(Data(packets)) == encode(Data(tuple(packets)))


@given(small_records)
def test_encode_offload_data_is_byte_identical_to_encode(records: list[bytes]) -> None:
    assert encode_offload_data(records) == encode(Data(offload_packets=records))


@settings(max_examples=40)
@given(st.lists(st.integers(1, MAX_PACKET_LEN), min_size=1, max_size=3))
@example([MAX_PACKET_LEN, MAX_PACKET_LEN, MAX_PACKET_LEN])
def test_encode_data_is_byte_identical_for_large_packets(sizes: list[int]) -> None:
    packets = [bytes([size % 256]) * size for size in sizes]
    wire = encode_data(packets)
    assert wire == encode(Data(packets))
    assert feed_in_chunks(wire, [len(wire) // 2]) == [Data(tuple(packets))]


def decode_hostile(wire: bytes, cuts: list[int]) -> list[Frame]:
    """Decode untrusted bytes; the only acceptable failure is ProtocolError."""
    decoder = FrameDecoder()
    out: list[Frame] = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(wire)]:
            decoder.feed(wire[start:cut])
            start = cut
            out.extend(decoder)
            assert decoder.buffered <= BOUND
    except ProtocolError as error:
        assert "\n" not in str(error)
        # ... and the decoder stays failed.
        try:
            decoder.next_frame()
        except ProtocolError:
            pass
        else:
            raise AssertionError("decoder recovered after a ProtocolError")
    return out


@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_random_bytes_only_raise_protocol_error(wire: bytes, cuts: list[int]) -> None:
    for frame in decode_hostile(wire, [c for c in cuts if c <= len(wire)]):
        assert isinstance(frame, (Hello, Data, Keepalive, Close))


@given(st.binary(max_size=600))
def test_random_bodies_behind_a_valid_prefix(body: bytes) -> None:
    # Random bytes almost never get past the length prefix; this puts the
    # protobuf parser and the limit checks under the fuzzer too.
    length = len(body)
    prefix = bytes([length]) if length < 0x80 else bytes([length & 0x7F | 0x80, length >> 7])
    frames_out = decode_hostile(prefix + body, [])
    assert len(frames_out) <= 1
    if frames_out:
        # Anything accepted must survive re-encoding: limits held on decode.
        assert feed_in_chunks(encode(frames_out[0]), []) == frames_out


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_mutated_streams_only_raise_protocol_error(sent: list[Frame], data: st.DataObject) -> None:
    wire = bytearray(b"".join(map(encode, sent)))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(wire) - 1), label="at")
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="action")
        if action == "flip":
            wire[at] ^= data.draw(st.integers(1, 255), label="xor")
        elif action == "insert":
            wire.insert(at, data.draw(st.integers(0, 255), label="byte"))
        elif len(wire) > 1:
            del wire[at]
    decode_hostile(bytes(wire), data.draw(st.lists(st.integers(0, len(wire)), max_size=4), label="cuts"))


@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_truncated_stream_yields_a_prefix_of_the_frames(sent: list[Frame], data: st.DataObject) -> None:
    encoded = [encode(frame) for frame in sent]
    wire = b"".join(encoded)
    cut = data.draw(st.integers(0, len(wire)), label="cut")
    decoder = FrameDecoder()
    decoder.feed(wire[:cut])
    got = list(decoder)  # never raises: a truncated stream is just incomplete
    assert got == sent[: len(got)]
    assert decoder.buffered == cut - sum(map(len, encoded[: len(got)]))
    assert decoder.buffered < len(encoded[len(got)]) if len(got) < len(sent) else decoder.buffered == 0


@settings(max_examples=30)
@given(st.integers(MAX_FRAME_LEN + 1, 2**64 + 5), st.binary(max_size=50))
def test_oversized_prefix_never_buffers_its_body(length: int, junk: bytes) -> None:
    prefix = bytearray()
    value = length
    while value >= 0x80:
        prefix.append(value & 0x7F | 0x80)
        value >>= 7
    prefix.append(value)
    decoder = FrameDecoder()
    raised = False
    try:
        for byte in bytes(prefix) + junk:
            decoder.feed(bytes([byte]))
            assert decoder.next_frame() is None
            assert decoder.buffered <= 10
    except ProtocolError:
        raised = True
    assert raised
