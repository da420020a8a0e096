"""Fuzz target: membership certificates, ``p2pvpn.membership.cert`` (docs/protocol.md §15.2-§15.4).

Contract: hostile bytes or text raise ``MembershipError`` and nothing else,
in every entry point a peer or a user reaches: ``open_certificate`` (a
Hello, a relay reservation, a join answer), ``check`` (clock, holder,
revocations) and ``from_text`` (``p2pvpn join CERT``).

The first input byte picks what the rest is (so one corpus covers all):

0. a ``SignedCertificate``, as received from a peer;
1. a ``Certificate`` body that the harness signs with the owner key, so
   mutations reach the field checks behind the signature;
2. a body the harness signs as the admin of vector A, with A attached
   (the admin chain);
3. the printable text ``p2pvpn-cert1:...``.

Properties of a certificate that opens: its bytes are the input (one
encoding per certificate); every field is within the documented grammar,
checked here with independent full-string patterns; ``issue`` with the same
fields and signer gives back the very same bytes; its text form reads back
to it; ``check`` at any time and with any revocation set either passes or
raises ``MembershipError``, and fails for a threshold after its not_before.

Seeds: certificates A and B of docs/protocol.md §15.9, rebuilt here.
"""

from __future__ import annotations

import re

from p2pvpn import addressing
from p2pvpn.membership import cert
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import Signer, network_id, peer_id_bytes, signer_from_seed

EXPECTED = (MembershipError,)
MAX_LEN = 4400  # over MAX_CERT_SIZE (4096) + the mode byte, so the size check is reached

T0 = 1767225600  # the document's vectors: 2026-01-01T00:00:00Z
_OWNER = signer_from_seed(bytes([0x10]) * 32)
_NID = network_id(_OWNER.public_key)
_PID = {n: peer_id_bytes(signer_from_seed(bytes([n]) * 32).public_key) for n in (1, 2, 3)}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_GROUP = re.compile(r"[A-Za-z0-9._-]{1,32}")
_TIMES = (0, T0 - 400, T0, T0 + 86400, 2**63)


def _vector_a() -> bytes:
    a = addressing.derive(_PID[1], _NID)
    return cert.issue(_OWNER, network=_NID, peer_id=_PID[1], name="alpha", ipv4=a.ipv4, ipv6=a.ipv6, roles=5,
                      groups=(), not_before=T0, not_after=T0 + 365 * 86400)


_A = _vector_a()
_ADMIN = signer_from_seed(bytes([1]) * 32, _A)


def _vector_b() -> bytes:
    a = addressing.derive(_PID[2], _NID)
    return cert.issue(_ADMIN, network=_NID, peer_id=_PID[2], name="bravo", ipv4=a.ipv4, ipv6=a.ipv6, roles=2,
                      groups=("ops", "dev"), not_before=T0, not_after=T0 + 7 * 86400)


def seeds() -> list[bytes]:
    a, b = _A, _vector_b()
    body_a = pb.SignedCertificate.FromString(a).certificate
    body_b = pb.SignedCertificate.FromString(b).certificate
    return [b"\x00" + a, b"\x00" + b, b"\x01" + body_a, b"\x02" + body_b, b"\x03" + cert.to_text(b).encode()]


def _properties(c: cert.Certificate, data: bytes, signer: Signer | None) -> None:
    assert c.raw == data, "a certificate with two encodings"
    assert c.network_id == _NID and c.peer_id[:6] == bytes.fromhex("002408011220") and len(c.peer_id) == 38
    assert _LABEL.fullmatch(c.name), f"name {c.name!r} is not a DNS label"
    assert all(_GROUP.fullmatch(g) for g in c.groups) and len(c.groups) <= cert.MAX_GROUPS, c.groups
    assert list(c.groups) == sorted(set(c.groups), key=str.encode), c.groups
    assert c.ipv4 in addressing.OVERLAY_V4_NET and c.ipv6 in addressing.network_v6_prefix(_NID)
    assert 0 < c.not_before < c.not_after <= c.not_before + cert.MAX_LIFETIME
    assert (c.admin is None) == (network_id(c.issuer) == _NID)
    if signer is not None:  # the fields alone make the certificate: issuing them again gives the same bytes
        again = cert.issue(signer, network=c.network_id, peer_id=c.peer_id, name=c.name, ipv4=c.ipv4, ipv6=c.ipv6,
                           roles=c.roles, groups=c.groups, not_before=c.not_before, not_after=c.not_after)
        assert again == data, "issue does not reproduce an accepted certificate"
    assert cert.from_text(cert.to_text(data)) == data
    for now in (*_TIMES, c.not_before, c.not_after + cert.CLOCK_SKEW):
        try:
            cert.check(c, now, {})
        except MembershipError:
            pass
    revoked = {c.peer_id: c.not_before + 1}
    try:
        cert.check(c, c.not_before, revoked)
    except MembershipError:
        pass
    else:
        raise AssertionError("a certificate older than its holder's revocation passed")


def _open(data: bytes, signer: Signer | None = None) -> None:
    try:
        c = cert.open_certificate(data, _NID)
    except MembershipError:
        return
    _properties(c, data, signer)


def _signed(body: bytes, signer: Signer) -> None:
    signed = pb.SignedCertificate(certificate=body, signature=signer.sign(cert.CERT_CONTEXT + body))
    if signer.issuer_certificate is not None:
        signed.issuer_certificate.ParseFromString(signer.issuer_certificate)
    _open(signed.SerializeToString(deterministic=True), signer)


def _text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        raw = cert.from_text(text)
    except MembershipError:
        return
    assert cert.to_text(raw) == text.strip(), "a certificate text with two spellings"
    _open(raw)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        _open(rest)
    elif mode == 1:
        _signed(rest, _OWNER)
    elif mode == 2:
        _signed(rest, _ADMIN)
    else:
        _text(rest)
