"""Fuzz target: signed node records and their envelope, ``p2pvpn.discovery.record``.

Contract: hostile bytes, keys and values raise ``RecordError`` and nothing
else, in every entry point the DHT reaches: ``open_sealed``, ``check``,
``parse_record_key`` and the KadDHT ``RecordValidator`` (``validate``,
``select``).

The first input byte picks what the rest is (so one corpus covers all):

0. a sealed envelope, as read from the DHT;
1. a ``NodeRecord`` payload that the harness signs with a known key, so
   mutations reach the record decoder behind the signature; a record that
   opens must pass ``seal`` again and open to itself;
2. a DHT key, a newline, then a value for ``RecordValidator.validate``;
   a key that parses must print back to itself (one spelling per peer);
3. up to four values, split at ``\\x00\\xff``, for ``RecordValidator.select``,
   whose answer must be a value that validates.

Seeds: the two sealed records of docs/protocol.md §12, rebuilt here.
"""

from __future__ import annotations

from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from p2pvpn.discovery import record as rec
from p2pvpn.discovery.record import (
    ExitRole,
    RecordError,
    RecordValidator,
    RelayRole,
    check,
    make_record,
    open_sealed,
    parse_record_key,
    record_key,
    seal,
)

EXPECTED = (RecordError,)
MAX_LEN = 4400  # over MAX_RECORD_SIZE (4096) + the mode byte, so the size check is reached

_EXPIRES = 1767225600  # the documented vectors expire 2026-01-01T00:00:00Z
_NOW = _EXPIRES - 100
_KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
_KEY2 = Ed25519PrivateKey.new(bytes([2]) * 32)
_PEER1 = ID.from_pubkey(_KEY1.get_public_key())
_PEER2 = ID.from_pubkey(_KEY2.get_public_key())
_VALIDATOR = RecordValidator("default", clock=lambda: _NOW)
_SEPARATOR = b"\x00\xff"


def _documented() -> tuple[bytes, bytes]:
    """SEALED1 and SEALED2 of docs/protocol.md (tests/discovery/test_record_doc.py checks the bytes)."""
    record1 = make_record(
        _PEER1, "default", seq=1, now=_EXPIRES - rec.DEFAULT_TTL,
        addrs=("/ip4/192.0.2.1/tcp/4001", "/ip6/2001:db8::1/udp/4001/quic-v1"),
        relay_addrs=(f"/ip4/198.51.100.7/tcp/4001/p2p/{_PEER2}/p2p-circuit",),
        relay=RelayRole(max_reservations=128, max_circuits=16),
        exit=ExitRole(allow=("0.0.0.0/0", "[::/0]:80,443"), deny=("10.0.0.0/8",), capacity_mbit=100, load_permille=250),
    )  # fmt: skip
    record2 = make_record(_PEER2, "lab", seq=7, now=_EXPIRES - rec.DEFAULT_TTL, address_index=1)
    return seal(record1, _KEY1), seal(record2, _KEY2)


def seeds() -> list[bytes]:
    sealed1, sealed2 = _documented()
    payload1 = rec._record_to_pb(open_sealed(sealed1)).SerializeToString()
    dns = make_record(_PEER1, "default", seq=2, now=_NOW, addrs=("/dns4/example.com/tcp/1", "/dns/a-b.example/udp/9/quic-v1"))
    payload2 = rec._record_to_pb(dns).SerializeToString()
    key1 = record_key("default", _PEER1).encode()
    return [
        b"\x00" + sealed1,
        b"\x00" + sealed2,
        b"\x01" + payload1,
        b"\x01" + payload2,
        b"\x02" + key1 + b"\n" + sealed1,
        b"\x02" + record_key("lab", _PEER2).encode() + b"\n" + sealed2,
        b"\x03" + _SEPARATOR.join((sealed2, sealed1, seal(dns, _KEY1))),
    ]


def _open(data: bytes) -> None:
    try:
        record = open_sealed(data)
    except RecordError:
        return
    try:
        check(record, network=record.network, now=_NOW)
    except RecordError:
        pass


def _signed(payload: bytes) -> None:
    try:
        record = open_sealed(rec._seal_payload(payload, _KEY1))
    except RecordError:
        return
    # Whatever opens is a record its owner could have sealed: seal accepts it and it opens to itself.
    assert open_sealed(seal(record, _KEY1)) == record
    try:
        check(record, network="default", now=_NOW, key_peer=_PEER1)
    except RecordError:
        pass


def _validate(data: bytes) -> None:
    raw_key, _, value = data.partition(b"\n")
    key = raw_key.decode("utf-8", "replace")
    try:
        network, peer = parse_record_key(key)
    except RecordError:
        pass
    else:
        assert record_key(network, peer) == key, "a record key with two spellings"
    try:
        _VALIDATOR.validate(key, value)
    except RecordError:
        pass


def _select(data: bytes) -> None:
    values = data.split(_SEPARATOR)[:4]
    key = record_key("default", _PEER1)
    try:
        index = _VALIDATOR.select(key, values)
    except RecordError:
        return
    _VALIDATOR.validate(key, values[index])  # a RecordError here escapes: select chose an invalid value


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    (_open, _signed, _validate, _select)[mode](rest)
