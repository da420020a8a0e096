"""Datagram seal/open: format, authentication of header and body, refusal of anything altered."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from p2pvpn.datagram.packet import (
    HEADER_LEN, MIN_DATAGRAM_LEN, Kind, open_, parse_header, plaintext_ok, seal, seal_many,
)

KEY = AESGCM(bytes(range(32)))
OTHER = AESGCM(bytes(32))


def test_layout() -> None:
    datagram = seal(KEY, Kind.DATA, 0x01020304, 7, b"\x45hello")
    assert datagram[:HEADER_LEN] == bytes.fromhex("01" "01020304" "0000000000000007")
    assert len(datagram) == HEADER_LEN + 6 + 16
    assert parse_header(datagram) == (1, 0x01020304, 7)
    assert open_(KEY, datagram) == b"\x45hello"
    assert open_(OTHER, datagram) is None


def test_short_and_unknown_type() -> None:
    assert parse_header(bytes(MIN_DATAGRAM_LEN - 1)) is None
    good = seal(KEY, Kind.PROBE, 5, 0, bytes(8))
    assert parse_header(good) == (2, 5, 0)
    assert parse_header(b"\x04" + good[1:]) is None
    assert parse_header(b"\x00" + good[1:]) is None


def test_plaintext_rules() -> None:
    assert plaintext_ok(Kind.DATA, b"x")
    assert not plaintext_ok(Kind.DATA, b"")
    assert plaintext_ok(Kind.PROBE, bytes(8)) and plaintext_ok(Kind.PROBE_REPLY, bytes(8))
    assert not plaintext_ok(Kind.PROBE, bytes(9))


@given(st.binary(min_size=1, max_size=300), st.integers(0, 2**60 - 1), st.integers(1, 2**32 - 1), st.data())
def test_any_flipped_bit_fails(plaintext: bytes, counter: int, index: int, data: st.DataObject) -> None:
    datagram = bytearray(seal(KEY, Kind.DATA, index, counter, plaintext))
    assert open_(KEY, bytes(datagram)) == plaintext
    position = data.draw(st.integers(1, len(datagram) - 1))  # byte 0 (type) is checked by parse_header
    datagram[position] ^= 1 << data.draw(st.integers(0, 7))
    assert open_(KEY, bytes(datagram)) is None


@given(st.sampled_from(list(Kind)), st.integers(0, 2**32 - 1), st.integers(0, 2**60 - 100),
       st.lists(st.binary(max_size=1500), max_size=20))
def test_seal_many_is_seal_with_consecutive_counters(
    kind: Kind, index: int, first: int, plaintexts: list[bytes]
) -> None:
    """The sender's batch form: byte for byte the datagrams one seal() per packet makes."""
    expected = [seal(KEY, kind, index, first + i, p) for i, p in enumerate(plaintexts)]
    assert seal_many(KEY, kind, index, first, plaintexts) == expected
