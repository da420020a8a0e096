"""DatagramOffer on the wire: round trip, the §16.2 limits on both encode and decode, fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pvpn.testing.frames import datagram_offer_frame
from p2pvpn.wire.codec import DatagramOffer, FrameDecoder, ProtocolError, encode

GOOD = DatagramOffer(1, bytes(range(32)), 0xDEADBEEF, 4001, (bytes(6), bytes(18)))


def decode(wire: bytes) -> object:
    decoder = FrameDecoder()
    decoder.feed(wire)
    return decoder.next_frame()


def test_round_trip() -> None:
    assert decode(encode(GOOD)) == GOOD


@pytest.mark.parametrize(
    "fields",
    [
        dict(epoch=0, public_key=bytes(32), receiver_index=1, port=1),
        dict(epoch=1, public_key=bytes(31), receiver_index=1, port=1),
        dict(epoch=1, public_key=bytes(32), receiver_index=0, port=1),
        dict(epoch=1, public_key=bytes(32), receiver_index=1, port=0),
        dict(epoch=1, public_key=bytes(32), receiver_index=1, port=65536),
        dict(epoch=1, public_key=bytes(32), receiver_index=1, port=1, endpoints=[bytes(6)] * 9),
        dict(epoch=1, public_key=bytes(32), receiver_index=1, port=1, endpoints=[bytes(7)]),
    ],
)
def test_limits_on_decode_and_encode(fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode(datagram_offer_frame(**fields))
    offer = DatagramOffer(fields["epoch"], fields["public_key"], fields["receiver_index"],  # type: ignore[arg-type]
                          fields["port"], tuple(fields.get("endpoints", ())))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        encode(offer)


@given(
    st.integers(1, 2**32 - 1), st.binary(min_size=32, max_size=32), st.integers(1, 2**32 - 1),
    st.integers(1, 65535), st.lists(st.sampled_from([6, 18]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                                    max_size=8),
)
def test_any_valid_offer_round_trips(epoch: int, key: bytes, index: int, port: int, endpoints: list[bytes]) -> None:
    offer = DatagramOffer(epoch, key, index, port, tuple(endpoints))
    assert decode(encode(offer)) == offer
