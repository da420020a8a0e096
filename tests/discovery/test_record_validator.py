"""RecordValidator as KadDHT uses it: validate() on every value, select() among competitors."""

from __future__ import annotations

import dataclasses

import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import NamespacedValidator

from p2pvpn.discovery import record as rec
from p2pvpn.discovery.record import RecordError, RecordValidator, make_record, record_key, seal

KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
KEY2 = Ed25519PrivateKey.new(bytes([2]) * 32)
PEER1 = ID.from_pubkey(KEY1.get_public_key())
PEER2 = ID.from_pubkey(KEY2.get_public_key())
NOW = 1_767_225_000.0
KEY = record_key("default", PEER1)


def sealed(
    seq: int = 1,
    *,
    ttl: int = rec.DEFAULT_TTL,
    key: Ed25519PrivateKey = KEY1,
    network: str = "default",
    **changes: object,
) -> bytes:
    """A record valid at NOW (unless ``ttl`` or ``changes`` say otherwise), sealed by ``key``."""
    peer = ID.from_pubkey(key.get_public_key())
    record = make_record(peer, network, seq=seq, now=NOW, ttl=ttl, addrs=("/ip4/192.0.2.1/tcp/4001",))
    return seal(dataclasses.replace(record, **changes), key)  # type: ignore[arg-type]


def validator(now: float = NOW) -> RecordValidator:
    return RecordValidator("default", clock=lambda: now)


def test_validate_accepts_a_valid_record() -> None:
    validator().validate(KEY, sealed())


def test_validate_uses_the_clock() -> None:
    value = sealed()
    validator(NOW + rec.DEFAULT_TTL - 1).validate(KEY, value)
    with pytest.raises(RecordError, match="expired"):
        validator(NOW + rec.DEFAULT_TTL).validate(KEY, value)


def test_validate_rejects_a_record_under_another_peers_key() -> None:
    with pytest.raises(RecordError, match="stored under"):
        validator().validate(record_key("default", PEER2), sealed())


def test_validate_rejects_a_key_of_another_network() -> None:
    lab_record = sealed(network="lab")
    with pytest.raises(RecordError, match="key is for network 'lab'"):
        validator().validate(record_key("lab", PEER1), lab_record)


def test_validate_rejects_a_record_of_another_network_under_our_key() -> None:
    with pytest.raises(RecordError, match="network 'lab', not 'default'"):
        validator().validate(KEY, sealed(network="lab"))


@pytest.mark.parametrize("key", [f"/pk/{PEER1}", "/p2pvpn/default/members", f"/p2pvpn/default/node/{PEER1}/x"])
def test_validate_rejects_foreign_keys(key: str) -> None:
    with pytest.raises(RecordError):
        validator().validate(key, sealed())


def test_validate_rejects_garbage_as_invalid_record_type() -> None:
    with pytest.raises(InvalidRecordType):
        validator().validate(KEY, b"garbage")


def test_validator_refuses_a_bad_network_name() -> None:
    with pytest.raises(RecordError):
        RecordValidator("a/b")


# --------------------------------------------------------------------------- #
# select


def test_select_prefers_the_highest_seq() -> None:
    values = [sealed(3), sealed(9), sealed(5)]
    assert validator().select(KEY, values) == 1
    assert validator().select(KEY, values[::-1]) == 1


def test_select_breaks_seq_ties_by_later_expiry_then_larger_bytes() -> None:
    early, late = sealed(4, ttl=100), sealed(4, ttl=200)
    assert validator().select(KEY, [late, early]) == 0
    assert validator().select(KEY, [early, late]) == 1
    # Same seq and expiry, different content: the lexicographically larger envelope wins.
    a = sealed(4, addrs=("/ip4/192.0.2.1/tcp/1",))
    b = sealed(4, addrs=("/ip4/192.0.2.1/tcp/2",))
    larger = max(a, b)
    assert validator().select(KEY, [a, b]) == [a, b].index(larger)
    assert validator().select(KEY, [b, a]) == [b, a].index(larger)


def test_select_keeps_the_first_of_identical_values() -> None:
    """KadDHT calls select([stored, incoming]): 0 keeps what it has."""
    value = sealed(2)
    assert validator().select(KEY, [value, value]) == 0


def test_select_never_picks_an_invalid_value() -> None:
    good = sealed(1)
    expired = sealed(99, ttl=-10)
    wrong_network = sealed(99, network="lab")
    other_peer = sealed(99, key=KEY2)
    lying = sealed(99, address_index=1)
    tampered = bytearray(sealed(99))
    tampered[-1] ^= 1
    values = [expired, wrong_network, other_peer, lying, bytes(tampered), b"junk", good, b""]
    assert validator().select(KEY, values) == values.index(good)


def test_select_with_no_valid_value_raises() -> None:
    with pytest.raises(RecordError, match="none of the 2"):
        validator().select(KEY, [b"junk", sealed(1, ttl=-1)])
    with pytest.raises(RecordError):
        validator().select(KEY, [])


def test_select_rejects_a_foreign_key() -> None:
    with pytest.raises(RecordError):
        validator().select(f"/pk/{PEER1}", [sealed()])


# --------------------------------------------------------------------------- #
# Wired into py-libp2p the way the DHT uses it.


def test_namespaced_validator_routes_our_namespace_only() -> None:
    namespaced = NamespacedValidator({rec.KEY_NAMESPACE: validator()}, strict_validation=True)
    namespaced.validate(KEY, sealed())
    assert namespaced.select(KEY, [sealed(1), sealed(2)]) == 1
    with pytest.raises(InvalidRecordType):
        namespaced.validate(f"/pk/{PEER1}", sealed())
    with pytest.raises(InvalidRecordType):
        namespaced.validate("plain-key", sealed())
    with pytest.raises(InvalidRecordType):
        namespaced.validate(KEY, sealed(ttl=-1))
