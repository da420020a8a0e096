"""Each tunnel message on its own: golden bytes, round trips, and encode() refusals.

The golden vectors are the ones printed in docs/protocol.md; if one changes
here, the document (and every other implementation) must change too.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from p2pvpn.errors import P2pvpnError
from p2pvpn.wire.codec import (
    MAX_CAPABILITIES,
    MAX_CAPABILITY_LEN,
    MAX_FRAME_LEN,
    MAX_NETWORK_LEN,
    MAX_OFFLOAD_PACKET_LEN,
    MAX_PACKET_LEN,
    MAX_PACKETS_PER_FRAME,
    MAX_REASON_LEN,
    OFFLOAD_CAPABILITY,
    OFFLOAD_HEADER_LEN,
    PROTOCOL_ID,
    PROTOCOL_VERSION,
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
    fit_reason,
)

# Peer 1 of docs/protocol.md ("Test vectors"), network "default".
PEER1_V4 = ipaddress.IPv4Address("100.111.188.205")
PEER1_V6 = ipaddress.IPv6Address("fd1f:6ae6:c5b:0:be30:9543:b4d8:919e")
# An ICMP echo request peer 1 -> peer 2 over IPv4, and the same over IPv6.
ICMP4 = bytes.fromhex("4500001c0000400040010e0a646fbccd6441a7590800e5ca12340001")
ICMP6 = bytes.fromhex(
    "6000000000083a40fd1f6ae60c5b0000be309543b4d8919efd1f6ae60c5b000068d2ce3563f3210080002ede12340001"
)

# A TCP super-packet peer 1 -> peer 2 as an offload TUN reads it: virtio-net
# header (NEEDS_CSUM, GSO_TCPV4, hdr_len 40, gso_size 2, csum 20+16), then
# IPv4 + TCP (seq 1, ACK|PSH, checksum field = pseudo-header sum) + "abcd".
OFFLOAD_TCP4 = bytes.fromhex(
    "01012800020014001000"
    "4500002c0001400040060df4646fbccd6441a759"
    "9c40145100000001000000015018ffff2cf60000"
    "61626364"
)

HELLO = Hello(version=1, network="default", ipv4=PEER1_V4, ipv6=PEER1_V6, mtu=1420)

GOLDEN: list[tuple[Frame, str]] = [
    (HELLO, "280a260801120764656661756c741a04646fbccd2210fd1f6ae60c5b0000be309543b4d8919e288c0b"),
    (
        Hello(
            version=1,
            network="lab",
            ipv4=ipaddress.IPv4Address("100.106.251.185"),
            ipv6=ipaddress.IPv6Address("fd9b:f87d:26e8:0:996b:c147:83aa:9750"),
            mtu=1280,
            capabilities=("example",),
            address_index=1,
        ),
        "2f0a2d080112036c61621a04646afbb92210fd9bf87d26e80000996bc14783aa975028800a32076578616d706c653801",
    ),
    (
        Data((ICMP4, ICMP6)),
        "5212500a1c" + ICMP4.hex() + "0a30" + ICMP6.hex(),
    ),
    (Keepalive(seq=1), "041a020801"),
    (Keepalive(seq=1, reply=True), "061a0408011001"),
    (Keepalive(seq=0), "021a00"),  # an all-default message still selects the oneof
    (Close(CloseCode.DUPLICATE, "duplicate tunnel"), "162214080512106475706c69636174652074756e6e656c"),
    (Close(CloseCode.NORMAL), "022200"),
    (Data(offload_packets=(OFFLOAD_TCP4,)), "3a12381236" + OFFLOAD_TCP4.hex()),
]


def decode_all(wire: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    decoder.feed(wire)
    frames = list(decoder)
    assert decoder.buffered == 0
    return frames


def test_constants_are_the_documented_ones() -> None:
    assert PROTOCOL_ID == "/p2pvpn/tunnel/1.0.0"
    assert PROTOCOL_VERSION == 1
    assert MAX_FRAME_LEN == 262144
    assert (MAX_PACKETS_PER_FRAME, MAX_PACKET_LEN) == (1024, 65535)
    assert (MAX_NETWORK_LEN, MAX_CAPABILITIES, MAX_CAPABILITY_LEN, MAX_REASON_LEN) == (64, 32, 64, 256)
    assert (OFFLOAD_CAPABILITY, OFFLOAD_HEADER_LEN, MAX_OFFLOAD_PACKET_LEN) == ("gso/1", 10, 65545)
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 0,
        "PROTOCOL_ERROR": 1,
        "VERSION_MISMATCH": 2,
        "WRONG_NETWORK": 3,
        "ADDRESS_MISMATCH": 4,
        "DUPLICATE": 5,
        "NOT_AUTHORIZED": 6,
        "TIMEOUT": 7,
        "HELLO_TIMEOUT": 8,
        "IDLE": 9,
    }


def test_protocol_error_is_a_p2pvpn_error_with_a_close_code() -> None:
    error = ProtocolError("bad")
    assert isinstance(error, P2pvpnError)
    assert error.code is CloseCode.PROTOCOL_ERROR
    assert ProtocolError("other network", CloseCode.WRONG_NETWORK).code is CloseCode.WRONG_NETWORK


@pytest.mark.parametrize(("frame", "wire_hex"), GOLDEN, ids=lambda v: type(v).__name__ if not isinstance(v, str) else "")
def test_golden_vectors(frame: Frame, wire_hex: str) -> None:
    wire = encode(frame)
    assert wire.hex() == wire_hex
    assert decode_all(wire) == [frame]


def test_golden_data_vector_from_the_fast_path() -> None:
    assert encode_data([ICMP4, ICMP6]).hex() == GOLDEN[2][1]


def test_hello_round_trips_every_field() -> None:
    hello = Hello(
        version=7,
        network="ünïcode-net",
        ipv4=ipaddress.IPv4Address("100.127.255.254"),
        ipv6=ipaddress.IPv6Address("fd00:1:2:0:ffff:ffff:ffff:ffff"),
        mtu=65535,
        capabilities=("a", "b", "c" * MAX_CAPABILITY_LEN),
        address_index=2**32 - 1,
    )
    [decoded] = decode_all(encode(hello))
    assert decoded == hello
    assert isinstance(decoded, Hello)
    assert isinstance(decoded.capabilities, tuple)
    assert isinstance(decoded.ipv4, ipaddress.IPv4Address)
    assert isinstance(decoded.ipv6, ipaddress.IPv6Address)


def test_hello_at_its_limits_round_trips() -> None:
    hello = Hello(
        version=1,
        network="n" * MAX_NETWORK_LEN,
        ipv4=PEER1_V4,
        ipv6=PEER1_V6,
        mtu=1280,
        capabilities=tuple(f"{i:0{MAX_CAPABILITY_LEN}d}" for i in range(MAX_CAPABILITIES)),
    )
    assert decode_all(encode(hello)) == [hello]


def test_data_decodes_to_a_tuple_of_bytes_even_from_a_list() -> None:
    [decoded] = decode_all(encode(Data([b"\x45abc", b"\x60def"])))
    assert decoded == Data((b"\x45abc", b"\x60def"))
    assert isinstance(decoded, Data)
    assert all(type(packet) is bytes for packet in decoded.packets)


def test_data_at_its_limits_round_trips() -> None:
    many = Data(tuple(bytes([i % 256]) for i in range(MAX_PACKETS_PER_FRAME)))
    assert decode_all(encode(many)) == [many]
    biggest = Data((b"\xaa" * MAX_PACKET_LEN, b"\xbb" * MAX_PACKET_LEN, b"\xcc" * MAX_PACKET_LEN))
    assert decode_all(encode(biggest)) == [biggest]


def test_offload_data_round_trips_at_its_limits() -> None:
    many = Data(offload_packets=tuple(bytes([i % 256]) * 11 for i in range(MAX_PACKETS_PER_FRAME)))
    assert decode_all(encode(many)) == [many]
    biggest = Data(offload_packets=(b"\xaa" * MAX_OFFLOAD_PACKET_LEN,) * 3)
    [decoded] = decode_all(encode(biggest))
    assert decoded == biggest and decoded.packets == ()
    assert all(type(record) is bytes for record in decoded.offload_packets)


def test_golden_offload_vector_from_the_fast_path() -> None:
    assert encode_offload_data([OFFLOAD_TCP4]).hex() == GOLDEN[-1][1]


def test_data_accepts_bytes_like_packets() -> None:
    packets = [bytearray(b"\x45one"), memoryview(b"\x45two")]
    wire = encode(Data(packets))  # type: ignore[arg-type]
    assert wire == encode(Data((b"\x45one", b"\x45two"))) == encode_data(packets)  # type: ignore[arg-type]


def test_keepalive_seq_uses_the_full_uint64_range() -> None:
    frame = Keepalive(seq=2**64 - 1, reply=True)
    assert decode_all(encode(frame)) == [frame]


def test_close_known_codes_decode_as_enum_unknown_as_int() -> None:
    [known, unknown] = decode_all(encode(Close(4, "x")) + encode(Close(99, "from the future")))
    assert isinstance(known, Close) and known.code is CloseCode.ADDRESS_MISMATCH
    assert isinstance(unknown, Close) and unknown.code == 99 and not isinstance(unknown.code, CloseCode)
    assert unknown.reason == "from the future"


def test_close_reason_limit_counts_utf8_bytes() -> None:
    frame = Close(CloseCode.NORMAL, "é" * (MAX_REASON_LEN // 2))  # 256 bytes
    assert decode_all(encode(frame)) == [frame]
    with pytest.raises(ProtocolError, match="Close.reason"):
        encode(Close(CloseCode.NORMAL, "é" * (MAX_REASON_LEN // 2) + "x"))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("short", "short"),
        ("x" * 300, "x" * MAX_REASON_LEN),
        ("é" * 200, "é" * (MAX_REASON_LEN // 2)),
        ("a" + "€" * 100, "a" + "€" * 85),  # 1 + 85*3 = 256 bytes; the 86th would split
        ("bad \ud800 text", "bad ? text"),
    ],
)
def test_fit_reason_always_makes_an_encodable_close(reason: str, expected: str) -> None:
    fitted = fit_reason(reason)
    assert fitted == expected
    assert len(fitted.encode()) <= MAX_REASON_LEN
    assert decode_all(encode(Close(CloseCode.PROTOCOL_ERROR, fitted))) == [Close(CloseCode.PROTOCOL_ERROR, fitted)]


# --------------------------------------------------------------------------- #
# encode() refuses what a receiver would refuse.


def hello(**changes: object) -> Hello:
    fields: dict[str, object] = {
        "version": 1,
        "network": "default",
        "ipv4": PEER1_V4,
        "ipv6": PEER1_V6,
        "mtu": 1420,
        "capabilities": (),
        "address_index": 0,
    }
    fields.update(changes)
    return Hello(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (hello(network="n" * (MAX_NETWORK_LEN + 1)), "Hello.network is 65 bytes"),
        (hello(network="é" * 33), "Hello.network is 66 bytes"),  # 33 characters, 66 bytes
        (hello(network="\ud800"), "Hello.network is not encodable"),
        (hello(capabilities=("c",) * (MAX_CAPABILITIES + 1)), "33 capabilities"),
        (hello(capabilities=("c" * (MAX_CAPABILITY_LEN + 1),)), "capability is 65 bytes"),
        (hello(version=-1), "Hello.version"),
        (hello(version=2**32), "Hello.version"),
        (hello(mtu=2**32), "Hello.mtu"),
        (hello(address_index=-1), "Hello.address_index"),
        (Data(()), "0 packets"),
        (Data((b"x",) * (MAX_PACKETS_PER_FRAME + 1)), "1025 packets"),
        (Data((b"x", b"")), "packet is 0 bytes"),
        (Data((b"x" * (MAX_PACKET_LEN + 1),)), "packet is 65536 bytes"),
        (Data((b"x" * MAX_PACKET_LEN,) * 5), "over the 262144-byte limit"),
        (Data((b"x",), (b"y" * 11,)), "not both"),
        (Data(offload_packets=(b"y" * 11,) * (MAX_PACKETS_PER_FRAME + 1)), "1025 packets"),
        (Data(offload_packets=(b"y" * 11, b"z" * 10)), "offload packet is 10 bytes, must be 11..65545"),
        (Data(offload_packets=(b"y" * 65546,)), "offload packet is 65546 bytes"),
        (Data(offload_packets=(b"y" * MAX_OFFLOAD_PACKET_LEN,) * 5), "over the 262144-byte limit"),
        (Keepalive(seq=-1), "Keepalive.seq"),
        (Keepalive(seq=2**64), "Keepalive.seq"),
        (Close(code=-1), "Close.code"),
        (Close(code=2**32), "Close.code"),
        (Close(code=0, reason="r" * (MAX_REASON_LEN + 1)), "Close.reason is 257 bytes"),
    ],
)
def test_encode_refuses_frames_over_the_limits(frame: Frame, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        encode(frame)
    assert "\n" not in str(caught.value)


def test_encode_rejects_non_frames_and_wrong_address_types() -> None:
    with pytest.raises(TypeError):
        encode(b"\x00")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode(hello(ipv4="100.64.0.1"))
    with pytest.raises(TypeError):
        encode(hello(ipv6=PEER1_V4))


# --------------------------------------------------------------------------- #
# encode_data: the hand-built twin of encode(Data).


@pytest.mark.parametrize(
    "sizes",
    [
        [1],
        [127],
        [128],
        [16383],
        [16384],
        [MAX_PACKET_LEN],
        [1400] * 45,
        [1, 127, 128, 16383, 16384],
        [40] * MAX_PACKETS_PER_FRAME,
        [MAX_PACKET_LEN] * 3,  # body needs a 3-byte length prefix
        [124],  # frame length exactly 127: 1-byte prefix
        [125],  # frame length exactly 128: 2-byte prefix
    ],
    ids=lambda sizes: f"{len(sizes)}pkts-{sum(sizes)}B",
)
def test_encode_data_matches_encode_at_varint_boundaries(sizes: list[int]) -> None:
    packets = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    fast = encode_data(packets)
    assert fast == encode(Data(packets))
    assert decode_all(fast) == [Data(tuple(packets))]


@pytest.mark.parametrize(
    "sizes",
    [[11], [117], [118], [16383], [16384], [MAX_OFFLOAD_PACKET_LEN], [65545, 65545, 65545], [11] * 1024],
    ids=lambda sizes: f"{len(sizes)}recs-{sum(sizes)}B",
)
def test_encode_offload_data_matches_encode_at_varint_boundaries(sizes: list[int]) -> None:
    records = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    fast = encode_offload_data(records)
    assert fast == encode(Data(offload_packets=records))
    assert decode_all(fast) == [Data(offload_packets=tuple(records))]


def test_encode_data_of_nothing_is_what_the_decoder_rejects() -> None:
    # encode_data trusts its caller; document what an empty batch produces.
    assert encode_data([]) == b"\x02\x12\x00"
    decoder = FrameDecoder()
    decoder.feed(encode_data([]))
    with pytest.raises(ProtocolError, match="0 packets"):
        decoder.next_frame()


def test_golden_vectors_are_the_ones_in_the_protocol_document() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    for _, wire_hex in GOLDEN:
        assert wire_hex in doc
