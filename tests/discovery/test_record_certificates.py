"""Records of a network with an owner carry certificates (docs/protocol.md §15.9.4), sans-IO.

In such a network a record counts only with a valid certificate of its own
peer (owner- or admin-signed, this network, in time, not revoked); its
addresses are the certificate's, and its relay/exit roles count only when
the certificate grants them. A network without owner ignores the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.discovery.record import (
    CertificateRecordError,
    ExitRole,
    NodeRecord,
    RecordError,
    RecordValidator,
    RelayRole,
    check,
    make_record,
    open_sealed,
    record_key,
    seal,
)
from p2pvpn.membership import canonical, cert
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.network import ROLE_ADMIN, ROLE_EXIT, ROLE_RELAY, network_id, peer_id_bytes, signer_from_seed

T0 = 1767225600  # 2026-01-01T00:00:00Z, as in §15.10
DAY = 86400
NOW = T0 + 3600

OWNER = signer_from_seed(bytes([0x10]) * 32)
NET = network_id(OWNER.public_key)  # tgegoektrvlu43fcqzq352hc4a5usevm (§15.10)
OTHER_OWNER = signer_from_seed(bytes([0x11]) * 32)
OTHER_NET = network_id(OTHER_OWNER.public_key)
KEYS = {n: Ed25519PrivateKey.new(bytes([n]) * 32) for n in (1, 2, 3)}
PEERS = {n: ID.from_pubkey(k.get_public_key()) for n, k in KEYS.items()}
SIGNERS = {n: signer_from_seed(bytes([n]) * 32) for n in (1, 2, 3)}
# Not a derivation of any of these peer IDs: only a certificate can give a peer this address.
IPV4 = ipaddress.IPv4Address("100.64.0.7")
IPV6 = addressing.network_v6_prefix(NET)[7]


def certificate(n: int = 1, *, roles: int = 0, network: str = NET, signer: object = OWNER, not_before: int = T0,
                lifetime: int = 7 * DAY, ipv4: ipaddress.IPv4Address = IPV4, ipv6: ipaddress.IPv6Address | None = None
                ) -> bytes:
    return cert.issue(signer, network=network, peer_id=PEERS[n].to_bytes(), name=f"peer{n}", ipv4=ipv4,  # type: ignore[arg-type]
                      ipv6=ipv6 if ipv6 is not None else addressing.network_v6_prefix(network)[7], roles=roles,
                      groups=(), not_before=not_before, not_after=not_before + lifetime)


def self_signed(n: int) -> bytes:
    """What a stranger can make: a certificate signed with its own key (cert.issue refuses to)."""
    body = pb.Certificate(network_id=NET, peer_id=PEERS[n].to_bytes(), name=f"peer{n}", ipv4=IPV4.packed,
                          ipv6=IPV6.packed, roles=ROLE_RELAY | ROLE_EXIT, not_before=T0, not_after=T0 + DAY,
                          issuer=SIGNERS[n].public_key)
    raw = canonical.encode(body)
    return canonical.encode(pb.SignedCertificate(certificate=raw, signature=SIGNERS[n].sign(cert.CERT_CONTEXT + raw)))


def record(n: int = 1, certificate_bytes: bytes = b"", *, ipv4: ipaddress.IPv4Address = IPV4,
           ipv6: ipaddress.IPv6Address = IPV6, relay: RelayRole | None = None, exit: ExitRole | None = None
           ) -> NodeRecord:
    return NodeRecord(peer_id=PEERS[n], network=NET, ipv4=ipv4, ipv6=ipv6, addrs=("/ip4/198.18.0.1/tcp/4242",),
                      relay=relay, exit=exit, certificate=certificate_bytes, seq=1, expires=NOW + 300)


def owned_check(r: NodeRecord, revocations: dict[bytes, int] | None = None, now: float = NOW) -> NodeRecord:
    return check(r, network=NET, now=NOW, key_peer=r.peer_id, revocations=revocations or {}, cert_now=now)


RELAY = RelayRole(max_reservations=128, max_circuits=16)
EXIT = ExitRole(allow=("0.0.0.0/0",))


def test_a_certified_record_is_valid_with_the_certificates_addresses() -> None:
    r = record(1, certificate(1))
    assert owned_check(r) == r
    derived = addressing.derive(PEERS[1].to_bytes(), NET)
    assert (r.ipv4, r.ipv6) != (derived.ipv4, derived.ipv6)  # no derivation involved: the certificate decides


def test_the_certificate_round_trips_through_seal_and_open() -> None:
    data = certificate(1)
    r = make_record(PEERS[1], NET, seq=5, now=NOW, certificate=data)
    assert (r.ipv4, r.ipv6) == (IPV4, IPV6)
    opened = open_sealed(seal(r, KEYS[1]))
    assert opened == r and opened.certificate == data


@pytest.mark.parametrize(
    ("certificate_bytes", "words"),
    [
        (b"", "carries no certificate"),
        (b"\x0a\x02garbage", "certificate"),
        (lambda: certificate(2), "another peer"),  # a valid certificate, of someone else
        (lambda: certificate(1, network=OTHER_NET, signer=OTHER_OWNER), "network"),
        (lambda: certificate(1, not_before=NOW + 301), "not valid yet"),
        (lambda: certificate(1, not_before=NOW - 2 * DAY, lifetime=DAY), "expired"),
        (lambda: self_signed(1), "neither the network owner nor an admin"),
    ],
)
def test_a_record_without_a_valid_certificate_is_refused(certificate_bytes: object, words: str) -> None:
    data = certificate_bytes() if callable(certificate_bytes) else certificate_bytes
    with pytest.raises(CertificateRecordError, match=words):
        owned_check(record(1, data))  # type: ignore[arg-type]


def test_a_revoked_member_and_the_members_of_a_revoked_admin_are_refused() -> None:
    admin_cert = certificate(2, roles=ROLE_ADMIN, lifetime=365 * DAY, ipv4=ipaddress.IPv4Address("100.64.0.8"),
                             ipv6=addressing.network_v6_prefix(NET)[8])
    by_admin = certificate(1, signer=signer_from_seed(bytes([2]) * 32, admin_cert))
    assert owned_check(record(1, by_admin))
    with pytest.raises(CertificateRecordError, match="certificate is revoked"):
        owned_check(record(1, certificate(1)), {PEERS[1].to_bytes(): T0 + 1})
    with pytest.raises(CertificateRecordError, match="admin's certificate is revoked"):
        owned_check(record(1, by_admin), {PEERS[2].to_bytes(): T0 + 1})
    assert owned_check(record(1, certificate(1)), {PEERS[1].to_bytes(): T0})  # voids only earlier certificates


@pytest.mark.parametrize("claim", ["ipv4", "ipv6", "derived"])
def test_a_record_must_claim_exactly_the_certificates_addresses(claim: str) -> None:
    derived = addressing.derive(PEERS[1].to_bytes(), NET)
    ipv4, ipv6 = {
        "ipv4": (ipaddress.IPv4Address("100.64.0.9"), IPV6),
        "ipv6": (IPV4, addressing.network_v6_prefix(NET)[9]),
        "derived": (derived.ipv4, derived.ipv6),  # what §12.7 would accept: not here
    }[claim]
    with pytest.raises(CertificateRecordError, match="its certificate gives"):
        owned_check(record(1, certificate(1), ipv4=ipv4, ipv6=ipv6))


@pytest.mark.parametrize(
    ("roles", "relay", "exit"),
    [(0, False, False), (ROLE_RELAY, True, False), (ROLE_EXIT, False, True), (ROLE_RELAY | ROLE_EXIT, True, True),
     (ROLE_ADMIN, False, False)],
)
def test_roles_count_only_when_the_certificate_grants_them(roles: int, relay: bool, exit: bool) -> None:
    checked = owned_check(record(1, certificate(1, roles=roles), relay=RELAY, exit=EXIT))
    assert (checked.relay is not None, checked.exit is not None) == (relay, exit)
    assert checked.relay in (None, RELAY) and checked.exit in (None, EXIT)


def test_a_network_without_owner_ignores_the_certificate_field() -> None:
    derived = addressing.derive(PEERS[1].to_bytes(), NET)
    plain = record(1, b"not even a certificate", ipv4=derived.ipv4, ipv6=derived.ipv6, relay=RELAY)
    assert check(plain, network=NET, now=NOW, key_peer=PEERS[1]) == plain  # §12.7 alone, roles as published
    with pytest.raises(RecordError, match="its peer ID gives"):  # and certificate addresses do not pass §12.7
        check(record(1, certificate(1)), network=NET, now=NOW, key_peer=PEERS[1])


def test_the_validator_refuses_and_counts_records_without_certificates() -> None:
    revoked: dict[bytes, int] = {}
    validator = RecordValidator(NET, clock=lambda: NOW, revocations=lambda: revoked)
    assert validator.owned and not RecordValidator(NET).owned
    key = record_key(NET, PEERS[1])
    derived = addressing.derive(PEERS[1].to_bytes(), NET)
    stranger = seal(record(1, ipv4=derived.ipv4, ipv6=derived.ipv6, relay=RELAY), KEYS[1])  # a self-signed record
    member = seal(record(1, certificate(1, roles=ROLE_RELAY), relay=RELAY), KEYS[1])
    with pytest.raises(CertificateRecordError):
        validator.validate(key, stranger)
    validator.validate(key, member)
    assert validator.open(PEERS[1], member).relay == RELAY
    # The stranger's record cannot win a select, however high its seq.
    newer = seal(replace(record(1, ipv4=derived.ipv4, ipv6=derived.ipv6), seq=99), KEYS[1])
    assert validator.select(key, [newer, stranger, member]) == 2
    assert validator.rejected["certificate"] == 3 and validator.rejected["invalid"] == 0
    # The revocation set is read at each validation: a revocation voids a record stored before it.
    revoked[PEERS[1].to_bytes()] = T0 + 1
    with pytest.raises(CertificateRecordError, match="revoked"):
        validator.validate(key, member)
    assert validator.rejected["certificate"] == 4
    with pytest.raises(RecordError):
        validator.validate(key, b"junk")
    assert validator.rejected["invalid"] == 1


def test_the_certificate_is_judged_on_the_membership_clock() -> None:
    """Record expiry on the reader's clock, the certificate on the membership clock (tests move it)."""
    member = seal(record(1, certificate(1)), KEYS[1])
    late = RecordValidator(NET, clock=lambda: NOW, revocations=dict, cert_clock=lambda: T0 + 8 * DAY)
    with pytest.raises(CertificateRecordError, match="expired"):
        late.validate(record_key(NET, PEERS[1]), member)
    RecordValidator(NET, clock=lambda: NOW, revocations=dict).validate(record_key(NET, PEERS[1]), member)


def test_an_oversized_certificate_is_refused_when_sealing() -> None:
    with pytest.raises(RecordError, match="certificate must be at most"):
        seal(record(1, b"\x00" * (cert.MAX_CERT_SIZE + 1)), KEYS[1])


OWNED = RecordValidator(NET, clock=lambda: NOW, revocations=dict)


@given(data=st.binary(max_size=600), relay=st.booleans())
def test_random_certificate_bytes_only_raise_record_errors(data: bytes, relay: bool) -> None:
    sealed = seal(record(1, data, relay=RELAY if relay else None), KEYS[1])
    with pytest.raises(CertificateRecordError):
        OWNED.validate(record_key(NET, PEERS[1]), sealed)


def test_the_owner_key_of_the_vectors_names_the_network() -> None:
    assert NET == "tgegoektrvlu43fcqzq352hc4a5usevm" and peer_id_bytes(SIGNERS[1].public_key) == PEERS[1].to_bytes()


def test_record_3_vector_of_the_document() -> None:
    """§15.10's Record 3: reproduced byte for byte, accepted with the relay role only."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    m = re.search(r"^Record 3, (\d+) bytes:\n\n```\n([0-9a-f\n]+)```", doc, flags=re.MULTILINE)
    assert m
    sealed = bytes.fromhex(m.group(2).replace("\n", ""))
    assert len(sealed) == int(m.group(1))
    a = addressing.derive(PEERS[1].to_bytes(), NET)
    cert_a = cert.issue(OWNER, network=NET, peer_id=PEERS[1].to_bytes(), name="alpha", ipv4=a.ipv4, ipv6=a.ipv6,
                        roles=ROLE_RELAY | ROLE_ADMIN, groups=(), not_before=T0, not_after=T0 + 365 * DAY)
    r = make_record(PEERS[1], NET, seq=1, now=T0, ttl=DAY, addrs=("/ip4/198.18.0.1/tcp/4242",), relay=RELAY,
                    exit=EXIT, certificate=cert_a)
    assert seal(r, KEYS[1]) == sealed
    key = record_key(NET, PEERS[1])
    assert f"`{key}`" in doc and len(key) == 98
    for now in (T0, T0 + DAY - 1):
        checked = RecordValidator(NET, clock=lambda: now, revocations=dict).open(PEERS[1], sealed)
        assert checked.relay == RELAY and checked.exit is None
    with pytest.raises(CertificateRecordError, match="revoked"):
        RecordValidator(NET, clock=lambda: T0, revocations=lambda: {PEERS[1].to_bytes(): T0 + 1}).open(PEERS[1], sealed)
    with pytest.raises(CertificateRecordError):
        RecordValidator(NET, clock=lambda: T0, revocations=dict).open(PEERS[1], seal(replace(r, certificate=b""), KEYS[1]))
    with pytest.raises(CertificateRecordError):
        bad = replace(r, ipv4=ipaddress.IPv4Address("100.64.0.7"))
        RecordValidator(NET, clock=lambda: T0, revocations=dict).open(PEERS[1], seal(bad, KEYS[1]))
    assert RecordValidator(NET, clock=lambda: T0).open(PEERS[1], sealed).exit == EXIT  # no owner: §12.7 alone
