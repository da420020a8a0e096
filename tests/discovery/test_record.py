"""Sealing, opening and checking node records: what is accepted and every way to be refused.

Records are built for the test peers of docs/protocol.md (Ed25519 seeds
``01`` x 32 and ``02`` x 32). Forged envelopes are made with the module's
unchecked ``_seal_payload`` or by hand from ``records_pb2``, since ``seal``
refuses to produce anything invalid.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.envelope import make_unsigned, unmarshal_envelope
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.discovery.record import (
    MAX_ADDRS,
    MAX_POLICY_ENTRIES,
    MAX_RECORD_SIZE,
    MAX_TTL,
    ExitRole,
    NodeRecord,
    RecordError,
    RelayRole,
    check,
    make_record,
    open_sealed,
    seal,
)
from p2pvpn.errors import P2pvpnError

KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
KEY2 = Ed25519PrivateKey.new(bytes([2]) * 32)
PEER1 = ID.from_pubkey(KEY1.get_public_key())
PEER2 = ID.from_pubkey(KEY2.get_public_key())
NOW = 1_767_225_000.0
RELAY_ADDR = f"/ip4/198.51.100.7/tcp/4001/p2p/{PEER2}/p2p-circuit"


def full_record(**changes: object) -> NodeRecord:
    """Peer 1's record in "default" with every field set, valid at NOW."""
    record = make_record(
        PEER1,
        "default",
        seq=7,
        now=NOW,
        addrs=("/ip4/192.0.2.1/tcp/4001", "/ip6/2001:db8::1/udp/4001/quic-v1"),
        relay_addrs=(RELAY_ADDR,),
        relay=RelayRole(max_reservations=128, max_circuits=16),
        exit=ExitRole(allow=("0.0.0.0/0", "[::/0]:80,443"), deny=("10.0.0.0/8",), capacity_mbit=100, load_permille=250),
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def forge(message: pb.NodeRecord, key: Ed25519PrivateKey = KEY1) -> bytes:
    """A correctly signed envelope around any payload, bypassing seal()'s checks."""
    return rec._seal_payload(message.SerializeToString(), key)


def as_pb(record: NodeRecord) -> pb.NodeRecord:
    return rec._record_to_pb(record)


def envelope(sealed: bytes) -> pb.Envelope:
    return pb.Envelope.FromString(sealed)


# --------------------------------------------------------------------------- #
# Accepted.


def test_round_trip_of_a_full_record() -> None:
    record = full_record()
    opened = open_sealed(seal(record, KEY1))
    assert opened == record
    assert all(isinstance(addr, Multiaddr) for addr in opened.addrs + opened.relay_addrs)
    check(opened, network="default", now=NOW, key_peer=PEER1)


def test_round_trip_of_a_minimal_record() -> None:
    record = make_record(PEER2, "lab", seq=0, now=NOW, address_index=1)
    opened = open_sealed(seal(record, KEY2))
    assert opened == record
    assert (opened.addrs, opened.relay_addrs, opened.relay, opened.exit) == ((), (), None, None)
    assert opened.address_index == 1
    check(opened, network="lab", now=NOW)


def test_an_all_zero_role_is_still_present() -> None:
    record = full_record(relay=RelayRole(0, 0), exit=ExitRole(allow=()))
    opened = open_sealed(seal(record, KEY1))
    assert opened.relay == RelayRole(0, 0)
    assert opened.exit == ExitRole(allow=(), deny=(), capacity_mbit=0, load_permille=0)


def test_strings_and_multiaddrs_make_equal_records() -> None:
    as_strings = full_record()
    as_objects = full_record(addrs=tuple(Multiaddr(str(a)) for a in as_strings.addrs))
    assert as_strings == as_objects
    assert seal(as_strings, KEY1) == seal(as_objects, KEY1)


def test_envelope_is_the_libp2p_signed_envelope() -> None:
    """py-libp2p's own RFC 0002 code parses and verifies our bytes: the layout is standard."""
    sealed = seal(full_record(), KEY1)
    env = unmarshal_envelope(sealed)
    env.validate(rec.DOMAIN)
    assert env.payload_type == b"/p2pvpn/node-record/1"
    assert env.public_key.to_bytes() == KEY1.get_public_key().to_bytes()
    with pytest.raises(ValueError):
        env.validate("libp2p-peer-record")  # the domain is part of what is signed
    assert rec._signing_bytes(b"payload") == make_unsigned(rec.DOMAIN, rec.PAYLOAD_TYPE, b"payload")


def test_record_error_is_a_p2pvpn_error_and_a_libp2p_invalid_record() -> None:
    from libp2p.records.utils import InvalidRecordType

    assert issubclass(RecordError, P2pvpnError)
    assert issubclass(RecordError, InvalidRecordType)


def test_expiry_bounds_are_inclusive_only_at_the_far_end() -> None:
    record = full_record(expires=int(NOW) + MAX_TTL)
    check(record, network="default", now=NOW)  # exactly MAX_TTL ahead is fine
    check(record, network="default", now=record.expires - 0.5)


# --------------------------------------------------------------------------- #
# Refused by open_sealed: bytes that are not a genuine record.


def test_every_flipped_byte_is_rejected() -> None:
    sealed = seal(full_record(), KEY1)
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(RecordError):
            open_sealed(bytes(tampered))


def test_tampered_payload_fails_the_signature() -> None:
    env = envelope(seal(full_record(), KEY1))
    env.payload = as_pb(full_record(seq=8)).SerializeToString()
    with pytest.raises(RecordError, match="signature"):
        open_sealed(env.SerializeToString())


def test_record_signed_by_another_key_than_its_peer_id() -> None:
    forged = forge(as_pb(full_record()), KEY2)  # peer 2 signs a record claiming to be peer 1
    with pytest.raises(RecordError, match="signed by"):
        open_sealed(forged)
    with pytest.raises(RecordError, match="key belongs to"):
        seal(full_record(), KEY2)


def test_swapped_public_key_fails_the_signature() -> None:
    env = envelope(seal(full_record(), KEY1))
    env.public_key.data = KEY2.get_public_key().to_bytes()
    with pytest.raises(RecordError, match="signature"):
        open_sealed(env.SerializeToString())


def test_signature_for_another_domain_is_rejected() -> None:
    payload = as_pb(full_record()).SerializeToString()
    env = envelope(seal(full_record(), KEY1))
    env.signature = KEY1.sign(make_unsigned("libp2p-peer-record", rec.PAYLOAD_TYPE, payload))
    with pytest.raises(RecordError, match="signature"):
        open_sealed(env.SerializeToString())


def test_other_payload_type_is_rejected_even_if_signed() -> None:
    payload = as_pb(full_record()).SerializeToString()
    env = envelope(seal(full_record(), KEY1))
    env.payload_type = b"\x03\x01"  # libp2p peer record
    env.signature = KEY1.sign(make_unsigned(rec.DOMAIN, b"\x03\x01", payload))
    with pytest.raises(RecordError, match="payload type"):
        open_sealed(env.SerializeToString())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda env: env.ClearField("public_key"),
        lambda env: setattr(env.public_key, "type", pb.Secp256k1),
        lambda env: setattr(env.public_key, "data", env.public_key.data + b"\x00"),
        lambda env: setattr(env, "signature", env.signature[:63]),
        lambda env: setattr(env, "signature", b""),
    ],
    ids=["no-key", "secp256k1", "long-key", "short-signature", "no-signature"],
)
def test_malformed_envelopes_are_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    env = envelope(seal(full_record(), KEY1))
    mutate(env)
    with pytest.raises(RecordError):
        open_sealed(env.SerializeToString())


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 10, b"garbage", bytes(range(256))])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(RecordError):
        open_sealed(data)


def test_non_bytes_is_rejected() -> None:
    with pytest.raises(RecordError):
        open_sealed("not bytes")  # type: ignore[arg-type]


def test_oversized_envelope_is_rejected_before_parsing() -> None:
    message = as_pb(full_record())
    # Pad with an unknown field (tag 100, bytes): valid protobuf, correctly signed, too big.
    padding = b"\xa2\x06" + rec._uvarint(MAX_RECORD_SIZE) + b"x" * MAX_RECORD_SIZE
    sealed = rec._seal_payload(message.SerializeToString() + padding, KEY1)
    assert len(sealed) > MAX_RECORD_SIZE
    with pytest.raises(RecordError, match="4096-byte limit"):
        open_sealed(sealed)
    with pytest.raises(RecordError, match="4096-byte limit"):
        open_sealed(b"\x00" * (MAX_RECORD_SIZE + 1))


def test_seal_refuses_an_oversized_record() -> None:
    long_name = ".".join(["a" * 60] * 4)  # a 243-byte DNS name
    addrs = tuple(f"/dns/{long_name}/tcp/{port}" for port in range(1, MAX_ADDRS + 1))
    with pytest.raises(RecordError, match="4096-byte limit"):
        seal(full_record(addrs=addrs), KEY1)


def test_unknown_payload_fields_are_ignored() -> None:
    """Unknown fields are how version 1 records are extended (proto3 rule)."""
    message = as_pb(full_record())
    payload = message.SerializeToString() + b"\xa2\x06\x03new"  # field 100, "new"
    assert open_sealed(rec._seal_payload(payload, KEY1)) == full_record()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("peer_id", bytes.fromhex("1220") + bytes(32), "Ed25519"),
        ("peer_id", b"", "Ed25519"),
        ("network", "", "network name"),
        ("network", "a/b", "network name"),
        ("network", "x" * 65, "network name"),
        ("ipv4", b"\x64\x6f\xbc", "ipv4"),
        ("ipv6", bytes(15), "ipv6"),
        ("address_index", 1025, "address_index"),
    ],
)
def test_bad_fields_are_rejected(field: str, value: object, message: str) -> None:
    msg = as_pb(full_record())
    setattr(msg, field, value)
    with pytest.raises(RecordError, match=message):
        open_sealed(forge(msg))


def test_invalid_utf8_network_is_rejected() -> None:
    payload = as_pb(full_record(network="lab")).SerializeToString().replace(b"\x12\x03lab", b"\x12\x03l\xffb")
    with pytest.raises(RecordError):
        open_sealed(rec._seal_payload(payload, KEY1))


def test_too_many_addresses() -> None:
    addrs = tuple(f"/ip4/192.0.2.1/tcp/{port}" for port in range(1, MAX_ADDRS + 2))
    with pytest.raises(RecordError, match="limit of 16"):
        seal(full_record(addrs=addrs), KEY1)
    msg = as_pb(full_record())
    msg.addrs.extend(Multiaddr(a).to_bytes() for a in addrs)
    with pytest.raises(RecordError, match="more than 16"):
        open_sealed(forge(msg))
    msg = as_pb(full_record())
    msg.relay_addrs.extend([Multiaddr(RELAY_ADDR).to_bytes()] * MAX_ADDRS)
    with pytest.raises(RecordError, match="more than 16"):
        open_sealed(forge(msg))
    seal(full_record(addrs=addrs[:MAX_ADDRS], relay_addrs=(RELAY_ADDR,) * MAX_ADDRS), KEY1)  # the limit itself is fine


@pytest.mark.parametrize(
    "exit_role",
    [
        ExitRole(allow=("0.0.0.0/0",) * (MAX_POLICY_ENTRIES + 1)),
        ExitRole(allow=(), deny=("10.0.0.0/8",) * (MAX_POLICY_ENTRIES + 1)),
        ExitRole(allow=("0.0.0.0/0:" + ",".join(["1"] * 30),)),  # over 64 bytes
        ExitRole(allow=("everything",)),
        ExitRole(allow=("10.0.0.1/8",)),  # host bits set
        ExitRole(allow=("0.0.0.0/0",), load_permille=1001),
        ExitRole(allow=("0.0.0.0/0",), capacity_mbit=2**32),
    ],
)
def test_bad_exit_roles_are_rejected(exit_role: ExitRole) -> None:
    with pytest.raises(RecordError):
        seal(full_record(exit=exit_role), KEY1)
    msg = as_pb(full_record(exit=None))
    msg.exit.allow.extend(exit_role.allow)
    msg.exit.deny.extend(exit_role.deny)
    msg.exit.load_permille = exit_role.load_permille
    msg.exit.capacity_mbit = exit_role.capacity_mbit % 2**32
    msg.exit.SetInParent()
    if exit_role.capacity_mbit < 2**32:  # a uint32 cannot carry more on the wire
        with pytest.raises(RecordError):
            open_sealed(forge(msg))


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(lambda: full_record(seq=-1), id="negative-seq"),
        pytest.param(lambda: full_record(seq=2**64), id="huge-seq"),
        pytest.param(lambda: full_record(expires=-5), id="negative-expiry"),
        pytest.param(lambda: full_record(relay=RelayRole(-1, 0)), id="negative-relay"),
        pytest.param(lambda: full_record(relay=RelayRole(2**32, 0)), id="huge-relay"),
        pytest.param(lambda: full_record(address_index=True), id="bool-index"),
        pytest.param(lambda: full_record(ipv4="100.111.188.205"), id="str-ipv4"),
        pytest.param(lambda: full_record(peer_id=PEER1.to_bytes()), id="bytes-peer"),
        pytest.param(lambda: full_record(addrs=("/ip4/0.0.0.0/tcp/4001",)), id="unspecified-addr"),
        pytest.param(lambda: full_record(relay_addrs=("/ip4/192.0.2.1/tcp/4001",)), id="relay-not-circuit"),
    ],
)
def test_seal_refuses_invalid_records(record) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError):
        seal(record(), KEY1)


def test_seal_refuses_non_ed25519_keys() -> None:
    from libp2p.crypto.secp256k1 import create_new_key_pair

    with pytest.raises(RecordError, match="Ed25519"):
        seal(full_record(), create_new_key_pair(b"\x07" * 32).private_key)


def test_unparsable_address_strings_fail_at_construction() -> None:
    with pytest.raises(RecordError, match="not a multiaddr"):
        full_record(addrs=("not an address",))


# --------------------------------------------------------------------------- #
# Refused by check: genuine records that this reader must not use.


def test_key_peer_mismatch() -> None:
    with pytest.raises(RecordError, match="stored under"):
        check(full_record(), network="default", now=NOW, key_peer=PEER2)


def test_wrong_network() -> None:
    with pytest.raises(RecordError, match="network 'default', not 'lab'"):
        check(full_record(), network="lab", now=NOW)


@pytest.mark.parametrize("now", [NOW + rec.DEFAULT_TTL, NOW + rec.DEFAULT_TTL + 0.1, NOW + 10 * MAX_TTL])
def test_expired(now: float) -> None:
    with pytest.raises(RecordError, match="expired"):
        check(full_record(), network="default", now=now)


def test_expiry_too_far_ahead() -> None:
    with pytest.raises(RecordError, match="more than 86400 s"):
        check(full_record(expires=int(NOW) + MAX_TTL + 1), network="default", now=NOW)


@pytest.mark.parametrize(
    "changes",
    [
        {"ipv4": ipaddress.IPv4Address("100.65.167.89")},  # peer 2's address
        {"ipv6": ipaddress.IPv6Address("fd1f:6ae6:c5b:0:68d2:ce35:63f3:2100")},  # peer 2's address
        {"address_index": 1},  # the index-0 address with a claim of index 1
        {"ipv4": ipaddress.IPv4Address("100.66.214.234")},  # index-1 address claimed as index 0
    ],
    ids=["ipv4-of-another-peer", "ipv6-of-another-peer", "wrong-index", "address-of-other-index"],
)
def test_overlay_address_not_derived_from_the_peer_id(changes: dict[str, object]) -> None:
    record = full_record(**changes)
    opened = open_sealed(seal(record, KEY1))  # structurally fine and genuinely signed...
    with pytest.raises(RecordError, match="claims"):
        check(opened, network="default", now=NOW)  # ...but a lie


def test_overlay_addresses_of_another_network_are_rejected() -> None:
    lab = make_record(PEER1, "lab", seq=1, now=NOW)
    with pytest.raises(RecordError, match="claims"):
        check(dataclasses.replace(lab, network="default"), network="default", now=NOW)


def test_index_whose_candidate_is_skipped_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """address_index must name the candidate actually used (docs/protocol.md §3.1).

    Skipped candidates (host part 0 or all ones) are too rare to find for a
    fixed key, so the derivation is patched to skip candidate 3.
    """
    real = rec.addressing.derive_ipv4

    def skipping_3(peer: bytes, network: str, index: int = 0) -> tuple[ipaddress.IPv4Address, int]:
        return real(peer, network, 4 if index == 3 else index)

    monkeypatch.setattr(rec.addressing, "derive_ipv4", skipping_3)
    record = full_record(address_index=3, ipv4=real(PEER1.to_bytes(), "default", 4)[0])
    with pytest.raises(RecordError, match="index 4"):
        check(record, network="default", now=NOW)


@pytest.mark.parametrize(("addr", "ok"), [
    ("/ip4/198.18.0.1/tcp/4242", True),
    ("/ip4/203.0.113.5/udp/4242/quic-v1", True),
    ("/ip6/2001:db8::1/tcp/4242", True),
    ("/dns4/relay.example.org/tcp/4242", True),
    ("/ip4/127.0.0.1/tcp/4242", False),
    ("/ip4/127.3.2.1/tcp/4242", False),
    ("/ip6/::1/tcp/4242", False),
    ("/ip6/::ffff:127.0.0.1/tcp/4242", False),
    ("/ip4/0.0.0.0/tcp/4242", False),
    ("/ip6/::/tcp/4242", False),
    ("/ip4/169.254.1.1/tcp/4242", False),
    ("/ip6/fe80::1/tcp/4242", False),
    ("/ip4/224.0.0.251/udp/5353/quic-v1", False),
    ("/ip6/ff02::1/tcp/4242", False),
    ("/ip4/255.255.255.255/tcp/4242", False),
    ("/ip4/127.0.0.1/tcp/4242/p2p/12D3KooWGpanFDaS8ELZwauZyb6a9NGERvQQxbgckzJ49CeAb4Ez/p2p-circuit", False),
    ("/ip4/198.18.0.9/tcp/4242/p2p/12D3KooWGpanFDaS8ELZwauZyb6a9NGERvQQxbgckzJ49CeAb4Ez/p2p-circuit", True),
])  # fmt: skip
def test_record_addresses_are_dialed_only_in_a_sane_scope(addr: str, ok: bool) -> None:
    from p2pvpn.discovery.record import dialable

    assert dialable(addr) is ok
    if "/127." in addr or addr.startswith("/ip6/::1/"):
        assert dialable(addr, allow_loopback=True)  # nodes that all live on loopback (tests)
