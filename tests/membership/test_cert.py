"""Certificates: what verifies, and every way of breaking one that must not (§15.2-§15.4)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.membership import cert
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.cert import CLOCK_SKEW
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, ROLE_EXIT, signer_from_seed

from .conftest import DAY, T0, Net

ED25519_L = 2**252 + 27742317777372353535851937790883648493


def test_owner_signed_certificate_verifies(net: Net) -> None:
    c = cert.verify(net.admin_cert, net.nid, T0 + 1, {}, net.pids[1])
    assert (c.name, c.roles, c.admin, c.issuer) == ("alpha", 5, None, net.owner.public_key)
    assert c.raw == net.admin_cert


def test_admin_signed_certificate_carries_the_chain(net: Net) -> None:
    data = net.issue(net.admin_signer(), 2, name="bravo", roles=ROLE_EXIT, groups=("ops", "dev"))
    c = cert.verify(data, net.nid, T0 + DAY, {}, net.pids[2])
    assert c.groups == ("dev", "ops")  # sorted by the signer
    assert c.admin is not None and c.admin.peer_id == net.pids[1]


def test_certificate_of_another_network_is_refused(net: Net) -> None:
    other = signer_from_seed(bytes([0x11]) * 32)
    with pytest.raises(MembershipError, match="is for network"):
        cert.verify(net.admin_cert, "a" * 32, T0, {})
    from p2pvpn.membership.network import network_id

    foreign = Net(other, network_id(other.public_key), net.keys, net.pids, b"")
    data = foreign.issue(other, 2)
    with pytest.raises(MembershipError, match="is for network"):
        cert.verify(data, net.nid, T0, {})


def test_a_stranger_key_cannot_sign(net: Net) -> None:
    """Someone who knows the network ID but not the owner key signs for the network: refused."""
    stranger = signer_from_seed(bytes([0x66]) * 32)
    with pytest.raises(MembershipError, match="neither the network owner nor an admin"):
        net.issue(stranger, 2)


def test_member_without_admin_role_cannot_sign(net: Net) -> None:
    plain = net.issue(net.owner, 2, roles=ROLE_EXIT)
    with pytest.raises(MembershipError, match="admin role"):
        net.issue(signer_from_seed(bytes([2]) * 32, plain), 3)


def test_chain_is_at_most_one_admin_deep(net: Net) -> None:
    admin2 = net.issue(net.admin_signer(), 2, roles=ROLE_ADMIN)  # an admin-made admin ...
    with pytest.raises(MembershipError, match="chain too long"):  # ... cannot sign
        net.issue(signer_from_seed(bytes([2]) * 32, admin2), 3)


def test_admin_key_must_match_its_certificate(net: Net) -> None:
    with pytest.raises(MembershipError, match="issuer key is not the key"):
        net.issue(signer_from_seed(bytes([4]) * 32, net.admin_cert), 3)


@pytest.mark.parametrize(("offset", "ok"), [
    (-CLOCK_SKEW - 1, False), (-CLOCK_SKEW, True), (0, True),
    (7 * DAY + CLOCK_SKEW - 1, True), (7 * DAY + CLOCK_SKEW, False),
])
def test_validity_window_with_clock_skew(net: Net, offset: int, ok: bool) -> None:
    data = net.issue(net.owner, 2)
    if ok:
        cert.verify(data, net.nid, T0 + offset, {})
    else:
        with pytest.raises(MembershipError, match="not valid yet|expired"):
            cert.verify(data, net.nid, T0 + offset, {})


def test_expired_admin_voids_what_it_signed(net: Net) -> None:
    data = net.issue(net.admin_signer(), 2, lifetime=400 * DAY)
    with pytest.raises(MembershipError, match="admin's certificate expired"):
        cert.verify(data, net.nid, T0 + 366 * DAY, {})


def test_revocation_by_peer_and_time(net: Net) -> None:
    old = net.issue(net.owner, 2, not_before=T0)
    new = net.issue(net.owner, 2, not_before=T0 + 100)
    revoked = {net.pids[2]: T0 + 100}
    with pytest.raises(MembershipError, match="revoked"):
        cert.verify(old, net.nid, T0 + 200, revoked)
    assert cert.verify(new, net.nid, T0 + 200, revoked).not_before == T0 + 100  # re-admitted after
    assert cert.verify(old, net.nid, T0 + 200, {net.pids[3]: T0 + 100})


def test_revoking_an_admin_voids_its_certificates(net: Net) -> None:
    data = net.issue(net.admin_signer(), 2)
    with pytest.raises(MembershipError, match="admin's certificate is revoked"):
        cert.verify(data, net.nid, T0 + 10, {net.pids[1]: T0 + 5})


def test_certificate_of_another_peer_is_refused(net: Net) -> None:
    with pytest.raises(MembershipError, match="another peer"):
        cert.verify(net.admin_cert, net.nid, T0, {}, net.pids[2])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "Alpha", "DNS label"), ("name", "-a", "DNS label"), ("name", "a" * 64, "DNS label"),
    ("ipv4", ipaddress.IPv4Address("10.0.0.1"), "is not a host of"),
    ("ipv4", ipaddress.IPv4Address("100.64.0.0"), "is not a host of"),
    ("ipv4", ipaddress.IPv4Address("100.127.255.255"), "is not a host of"),
    ("ipv6", ipaddress.IPv6Address("fd00::1"), "is not a host of"),
    ("groups", ("bad group",), "groups"), ("groups", tuple(f"g{i:02}" for i in range(17)), "groups"),
])
def test_signer_refuses_bad_fields(net: Net, field: str, value: object, message: str) -> None:
    from p2pvpn import addressing

    a = addressing.derive(net.pids[2], net.nid)
    args = dict(network=net.nid, peer_id=net.pids[2], name="b", ipv4=a.ipv4, ipv6=a.ipv6, roles=0, groups=(),
                not_before=T0, not_after=T0 + DAY)
    args[field] = value
    with pytest.raises(MembershipError, match=message):
        cert.issue(net.owner, **args)  # type: ignore[arg-type]


def _resign(net: Net, mutate: object) -> bytes:
    """A certificate whose body was changed and then correctly signed by the owner: field checks must catch it."""
    body = pb.Certificate()
    body.ParseFromString(pb.SignedCertificate.FromString(net.issue(net.owner, 2)).certificate)
    mutate(body)  # type: ignore[operator]
    raw = body.SerializeToString()
    return pb.SignedCertificate(certificate=raw, signature=net.owner.sign(cert.CERT_CONTEXT + raw)).SerializeToString()


def test_verifier_refuses_bad_fields_even_when_signed(net: Net) -> None:
    def unsorted(b: pb.Certificate) -> None:
        b.groups[:] = ["b", "a"]

    def backwards(b: pb.Certificate) -> None:
        b.not_after = b.not_before

    def too_long(b: pb.Certificate) -> None:
        b.not_after = b.not_before + cert.MAX_LIFETIME + 1

    for mutate, message in ((unsorted, "sorted"), (backwards, "validity"), (too_long, "validity")):
        with pytest.raises(MembershipError, match=message):
            cert.verify(_resign(net, mutate), net.nid, T0, {})


def test_non_canonical_s_is_refused(net: Net) -> None:
    """S + L verifies under lax Ed25519 implementations: the same certificate with other bytes. Not here."""
    signed = pb.SignedCertificate.FromString(net.admin_cert)
    sig = signed.signature
    s = int.from_bytes(sig[32:], "little") + ED25519_L
    signed.signature = sig[:32] + s.to_bytes(32, "little")
    with pytest.raises(MembershipError, match="bad signature"):
        cert.open_certificate(signed.SerializeToString(), net.nid)


@pytest.mark.parametrize("tamper", ["unknown field", "duplicate field", "long varint", "reordered"])
def test_non_canonical_encodings_are_refused(net: Net, tamper: str) -> None:
    data = net.admin_cert
    signed = pb.SignedCertificate.FromString(data)
    body = signed.certificate
    if tamper == "unknown field":
        bad = data + bytes([0x78, 0x01])  # field 15, varint 1
    elif tamper == "duplicate field":
        bad = data + bytes([0x12, 0x40]) + signed.signature  # signature twice: last one wins in protobuf
    elif tamper == "long varint":
        bad = bytes([0x0A, 0x80 | (len(body) & 0x7F), 0x80 | (len(body) >> 7), 0x00]) + data[3:]
    else:
        sig_part = bytes([0x12, 0x40]) + signed.signature
        bad = sig_part + data[: len(data) - len(sig_part)]
    assert pb.SignedCertificate.FromString(bad).signature == signed.signature  # protobuf itself accepts it
    with pytest.raises(MembershipError, match="canonical"):
        cert.open_certificate(bad, net.nid)


def test_non_canonical_body_is_refused_even_with_a_good_signature(net: Net) -> None:
    signed = pb.SignedCertificate.FromString(net.admin_cert)
    body = signed.certificate + bytes([0x78, 0x01])  # unknown field inside the signed bytes
    bad = pb.SignedCertificate(certificate=body, signature=net.owner.sign(cert.CERT_CONTEXT + body))
    with pytest.raises(MembershipError, match="body is not canonically encoded"):
        cert.open_certificate(bad.SerializeToString(), net.nid)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_refused(net: Net, data: st.DataObject) -> None:
    original = net.issue(net.admin_signer(), 2, name="bravo", groups=("dev",))
    pos = data.draw(st.integers(0, len(original) - 1))
    delta = data.draw(st.integers(1, 255))
    mutated = bytearray(original)
    mutated[pos] ^= delta
    with pytest.raises(MembershipError):
        cert.verify(bytes(mutated), net.nid, T0 + 10, {}, net.pids[2])


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=600))
def test_garbage_is_refused_with_one_error_type(net: Net, blob: bytes) -> None:
    with pytest.raises(MembershipError):
        cert.open_certificate(blob, net.nid)


@settings(max_examples=50, deadline=None)
@given(name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
       roles=st.integers(0, 7), groups=st.sets(st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True), max_size=16),
       start=st.integers(1, 2**40), lifetime=st.integers(1, cert.MAX_LIFETIME))
def test_round_trip(net: Net, name: str, roles: int, groups: set[str], start: int, lifetime: int) -> None:
    data = net.issue(net.owner, 3, name=name, roles=roles, groups=tuple(groups), not_before=start, lifetime=lifetime)
    c = cert.verify(data, net.nid, start, {})
    assert (c.name, c.roles, set(c.groups), c.not_before, c.not_after) == (name, roles, groups, start, start + lifetime)
    assert cert.from_text(cert.to_text(data)) == data


def test_text_form_errors_are_one_line(net: Net) -> None:
    for text, message in (("hello", "must start with"), ("p2pvpn-cert1:!!", "base64url"),
                          ("p2pvpn-cert1:AB", "canonical base64url")):
        with pytest.raises(MembershipError, match=message):
            cert.from_text(text)
