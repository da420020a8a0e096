"""Hostile input only ever raises RecordError; valid records survive a round trip.

The signature shields the record decoder from random bytes, so besides raw
and mutated envelopes the fuzzers also sign arbitrary payloads (random bytes,
and NodeRecord messages with random field values) to reach every check
behind it.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.discovery.record import (
    MAX_ADDRS,
    MAX_RECORD_SIZE,
    ExitRole,
    NodeRecord,
    RecordError,
    RecordValidator,
    RelayRole,
    make_record,
    open_sealed,
    parse_policy_entry,
    parse_record_key,
    record_key,
    seal,
)

KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
PEER1 = ID.from_pubkey(KEY1.get_public_key())
NOW = 1_767_225_000.0
VALID = seal(
    make_record(
        PEER1,
        "default",
        seq=1,
        now=NOW,
        addrs=("/ip4/192.0.2.1/tcp/4001", "/dns/example.com/udp/4001/quic-v1"),
        relay_addrs=(f"/ip6/2001:db8::7/tcp/4001/p2p/{PEER1}/p2p-circuit",),
        relay=RelayRole(1, 2),
        exit=ExitRole(allow=("0.0.0.0/0:80,443",), deny=("[fc00::/7]",), capacity_mbit=5, load_permille=7),
    ),
    KEY1,
)
VALIDATOR = RecordValidator("default", clock=lambda: NOW)
KEY = record_key("default", PEER1)

T = TypeVar("T")

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def opens_or_raises_record_error(data: bytes) -> NodeRecord | None:
    """The contract under test: a record, or RecordError; any other exception fails the test."""
    try:
        return open_sealed(data)
    except RecordError:
        return None


# --------------------------------------------------------------------------- #
# Unsigned garbage.


@FUZZ
@given(st.binary(max_size=MAX_RECORD_SIZE + 64))
@example(b"\x0a\x00")  # an empty public key
@example(b"\x0a\x02\x08\x01")  # Ed25519 key without data
@example(b"\x2a\x40" + bytes(64))  # only a signature
def test_random_bytes(data: bytes) -> None:
    assert opens_or_raises_record_error(data) is None


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[index] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[index : index + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[index:]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(mutations())
def test_mutated_envelopes(data: bytes) -> None:
    opened = opens_or_raises_record_error(data)
    if opened is not None:
        # Only encoding-level changes can survive (e.g. bytes appended as an
        # unknown envelope field); the signed record itself cannot change.
        assert opened == open_sealed(VALID)


# --------------------------------------------------------------------------- #
# Correctly signed garbage: reaches the record decoder.


@FUZZ
@given(st.binary(max_size=2048))
@example(b"\x0a\x00")
@example(b"\x42\x02\x04\x01")  # a truncated ip4 multiaddr
@example(b"\x52\x00\x5a\x00")  # both roles, all defaults
def test_signed_random_payloads(payload: bytes) -> None:
    assert opens_or_raises_record_error(rec._seal_payload(payload, KEY1)) is None


def mostly(valid: st.SearchStrategy[T], anything: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``valid`` three times out of four: a record with one bad field reaches that field's check."""
    return st.integers(0, 3).flatmap(lambda pick: anything if pick == 0 else valid)


multiaddr_bytes = mostly(
    st.sampled_from(
        [
            Multiaddr("/ip4/192.0.2.1/tcp/4001").to_bytes(),
            Multiaddr("/ip6/::1/udp/1/quic-v1").to_bytes(),
            Multiaddr("/dns4/example.com/tcp/1").to_bytes(),
        ]
    ),
    st.binary(max_size=64),
)
relay_bytes = mostly(
    st.just(Multiaddr(f"/ip4/192.0.2.1/tcp/4001/p2p/{PEER1}/p2p-circuit").to_bytes()), multiaddr_bytes
)
short_text = st.text(max_size=70)
policy_text = mostly(st.sampled_from(["0.0.0.0/0", "[::/0]:1-2", "10.0.0.0/8:*"]), short_text)


@st.composite
def node_record_messages(draw: st.DrawFn) -> pb.NodeRecord:
    """NodeRecord messages whose fields are mostly right, sometimes anything."""
    message = pb.NodeRecord(
        peer_id=draw(mostly(st.just(PEER1.to_bytes()), st.binary(max_size=40))),
        network=draw(mostly(st.sampled_from(["default", "lab", "a.b_c-1"]), short_text)),
        seq=draw(st.integers(0, 2**64 - 1)),
        expires_unix=draw(st.integers(0, 2**64 - 1)),
        ipv4=draw(mostly(st.binary(min_size=4, max_size=4), st.binary(max_size=6))),
        ipv6=draw(mostly(st.binary(min_size=16, max_size=16), st.binary(max_size=18))),
        address_index=draw(mostly(st.integers(0, 1024), st.integers(0, 2**32 - 1))),
        addrs=draw(st.lists(multiaddr_bytes, max_size=MAX_ADDRS + 1)),
        relay_addrs=draw(st.lists(relay_bytes, max_size=3)),
        certificate=draw(mostly(st.just(b""), st.binary(max_size=80))),
    )
    if draw(st.booleans()):
        message.relay.max_reservations = draw(st.integers(0, 2**32 - 1))
        message.relay.SetInParent()
    if draw(st.booleans()):
        message.exit.allow.extend(draw(st.lists(policy_text, max_size=4)))
        message.exit.deny.extend(draw(st.lists(policy_text, max_size=17)))
        message.exit.load_permille = draw(mostly(st.integers(0, 1000), st.integers(0, 2**32 - 1)))
        message.exit.SetInParent()
    return message


@FUZZ
@given(node_record_messages())
def test_signed_records_with_random_fields(message: pb.NodeRecord) -> None:
    opened = opens_or_raises_record_error(rec._seal_payload(message.SerializeToString(), KEY1))
    if opened is not None:
        # Whatever open_sealed accepts, seal reproduces byte for byte.
        assert rec._record_to_pb(opened).SerializeToString() == message.SerializeToString()
    try:
        VALIDATOR.validate(KEY, rec._seal_payload(message.SerializeToString(), KEY1))
    except RecordError:
        pass


# --------------------------------------------------------------------------- #
# Keys, policies and the validator.


@FUZZ
@given(st.one_of(st.text(max_size=200), st.text(alphabet="/p2vnodeful12D3KooW", max_size=100)))
@example(f"/p2pvpn/default/node/{PEER1}")
def test_random_record_keys(key: str) -> None:
    try:
        network, peer_id = parse_record_key(key)
    except RecordError:
        return
    assert record_key(network, peer_id) == key


@FUZZ
@given(st.one_of(st.text(max_size=80), st.text(alphabet="0123456789./:[]abcdef*,-", max_size=70)))
def test_random_policy_entries(entry: str) -> None:
    try:
        parse_policy_entry(entry)
    except RecordError:
        pass


@FUZZ
@given(key=st.one_of(st.just(KEY), st.text(max_size=150)), values=st.lists(st.one_of(st.just(VALID), st.binary(max_size=300)), max_size=5))
def test_validator_only_raises_record_error(key: str, values: list[bytes]) -> None:
    try:
        VALIDATOR.validate(key, values[0] if values else b"")
    except RecordError:
        pass
    try:
        index = VALIDATOR.select(key, values)
    except RecordError:
        return
    assert values[index] == VALID


# --------------------------------------------------------------------------- #
# Valid records of every shape round-trip.

labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True).filter(lambda s: s[2:4] != "--")
dns_names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ports = st.integers(1, 65535)
hosts = st.one_of(
    st.builds(lambda n: f"/ip4/{ipaddress.IPv4Address(n)}", st.integers(1, 2**32 - 1)),
    st.builds(lambda n: f"/ip6/{ipaddress.IPv6Address(n)}", st.integers(1, 2**128 - 1)),
    st.builds(lambda kind, name: f"/{kind}/{name}", st.sampled_from(["dns", "dns4", "dns6"]), dns_names),
)
transports = st.one_of(st.builds("/tcp/{}".format, ports), st.builds("/udp/{}/quic-v1".format, ports))
listen_addrs = st.builds(str.__add__, hosts, transports)
relay_addrs = st.builds(lambda addr: f"{addr}/p2p/{PEER1}/p2p-circuit", listen_addrs)


@FUZZ
@given(
    index=st.integers(0, 1024),
    seq=st.integers(0, 2**64 - 1),
    addrs=st.lists(listen_addrs, max_size=4),
    relays=st.lists(relay_addrs, max_size=2),
    relay=st.one_of(st.none(), st.builds(RelayRole, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
    exit_role=st.one_of(
        st.none(),
        st.builds(ExitRole, allow=st.lists(st.sampled_from(["0.0.0.0/0", "[2000::/3]:443"]), max_size=3).map(tuple)),
    ),
)
def test_valid_records_round_trip(
    index: int, seq: int, addrs: list[str], relays: list[str], relay: RelayRole | None, exit_role: ExitRole | None
) -> None:
    record = make_record(
        PEER1, "default", seq=seq, now=NOW, address_index=index, addrs=addrs, relay_addrs=relays, relay=relay, exit=exit_role
    )
    sealed = seal(record, KEY1)
    assert open_sealed(sealed) == record
    VALIDATOR.validate(KEY, sealed)


@FUZZ
@given(dns_names)
def test_every_dns_name_of_the_grammar_is_a_multiaddr(name: str) -> None:
    """Our DNS rule must be a subset of what the multiaddr library accepts, or valid records would fail to open."""
    raw = b"\x35" + rec._uvarint(len(name)) + name.encode() + b"\x06\x00\x01"
    rec._check_addr(raw, relay=False)
    assert Multiaddr(raw).to_bytes() == raw
