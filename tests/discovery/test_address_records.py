"""Address records (docs/protocol.md §18.2): keys, validation, selection; no network."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator

from p2pvpn.discovery import record as rec
from p2pvpn.discovery.address import AddressValidator, address_key, is_address_key, keys_of, parse_address_key
from p2pvpn.discovery.record import RecordError, RecordValidator, make_record, seal

KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
KEY2 = Ed25519PrivateKey.new(bytes([2]) * 32)
PEER1 = ID.from_pubkey(KEY1.get_public_key())
PEER2 = ID.from_pubkey(KEY2.get_public_key())
NOW = 1_767_225_000.0


def record(seq: int = 1, key: Ed25519PrivateKey = KEY1, network: str = "default") -> rec.NodeRecord:
    peer = ID.from_pubkey(key.get_public_key())
    return make_record(peer, network, seq=seq, now=NOW, addrs=("/ip4/192.0.2.1/tcp/4001",))


def sealed(seq: int = 1, key: Ed25519PrivateKey = KEY1, network: str = "default") -> bytes:
    return seal(record(seq, key, network), key)


def validator(now: float = NOW) -> AddressValidator:
    return AddressValidator(RecordValidator("default", clock=lambda: now))


def test_keys_of_peer_1_match_the_document() -> None:
    r = record()
    assert keys_of("default", r) == [
        "/p2pvpn/default/addr/100.111.188.205",
        "/p2pvpn/default/addr/fd1f:6ae6:c5b:0:be30:9543:b4d8:919e",
    ]
    assert parse_address_key(keys_of("default", r)[1]) == ("default", r.ipv6)


@pytest.mark.parametrize("key", [
    "/p2pvpn/default/addr/100.064.0.1",          # not canonical
    "/p2pvpn/default/addr/FD1F::1",               # upper case
    "/p2pvpn/default/addr/fd1f:0::1",             # not compressed
    "/p2pvpn/default/addr/not-an-address",
    "/p2pvpn/default/node/100.64.0.1",
    "/p2pvpn/default/addr/100.64.0.1/x",
    "/other/default/addr/100.64.0.1",
    "/p2pvpn/default/addr/" + "1" * 200,
])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(RecordError):
        parse_address_key(key)


def test_a_members_record_is_valid_under_both_its_addresses() -> None:
    v = validator()
    for key in keys_of("default", record()):
        v.validate(key, sealed())
        assert v.open(key, sealed()).peer_id == PEER1


def test_a_record_under_someone_elses_address_is_refused() -> None:
    other = keys_of("default", record(key=KEY2))[0]
    with pytest.raises(RecordError, match="claims"):
        validator().validate(other, sealed())


def test_other_network_and_expired_records_are_refused() -> None:
    key = keys_of("default", record())[0]
    with pytest.raises(RecordError):
        validator().validate(key.replace("default", "lab"), sealed())
    with pytest.raises(RecordError, match="expired"):
        validator(now=NOW + 10_000).validate(key, sealed())


def test_select_prefers_the_newest_copy_of_one_peer() -> None:
    key = keys_of("default", record())[0]
    assert validator().select(key, [sealed(1), sealed(3), sealed(2)]) == 1
    assert validator().select(key, [b"junk", sealed(1)]) == 1
    with pytest.raises(RecordError):
        validator().select(key, [b"junk"])


class _SameAddress(RecordValidator):
    """Gives every record one IPv4, as two colliding members would have (§12.12)."""

    def open(self, key_peer: ID, value: bytes, now: float | None = None) -> rec.NodeRecord:
        opened = super().open(key_peer, value, now)
        return dataclasses.replace(opened, ipv4=ipaddress.IPv4Address("100.64.0.1"))


def test_of_two_members_claiming_one_address_the_smaller_peer_id_wins() -> None:
    v = AddressValidator(_SameAddress("default", clock=lambda: NOW))
    key = address_key("default", ipaddress.IPv4Address("100.64.0.1"))
    values = [sealed(9, KEY1), sealed(1, KEY2)]
    smaller = min((0, PEER1), (1, PEER2), key=lambda item: item[1].to_bytes())[0]
    assert v.select(key, values) == smaller
    assert v.select(key, values[::-1]) == 1 - smaller


def test_dht_namespace_routes_address_keys_to_the_address_validator() -> None:
    from p2pvpn.discovery.dht import _ByKey

    class FakeDht:
        rejected = 0
        extra_validators: dict = {}
        validator = RecordValidator("default", clock=lambda: NOW)
        address_validator = AddressValidator(validator)

    namespaced = NamespacedValidator({"p2pvpn": _ByKey(FakeDht())}, strict_validation=True)  # type: ignore[arg-type]
    key = keys_of("default", record())[0]
    namespaced.validate(key, sealed())
    assert is_address_key(key) and not is_address_key(rec.record_key("default", PEER1))
    with pytest.raises(Exception):
        namespaced.validate(keys_of("default", record(key=KEY2))[0], sealed())
