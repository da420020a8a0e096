"""Membership certificates: issue and verify (docs/protocol.md §15.2-§15.4).

Theory of operation: a certificate says "peer P is a member of network N,
named X, with these addresses, roles and groups, from T0 to T1", signed by
the owner key (which hashes to N) or by an admin whose own owner-signed
certificate is attached. ``open_certificate`` does every check that depends
only on the bytes; ``check`` adds the reader's clock and revocations. A
verifier never needs anything but the bytes, the network ID, ``now`` and
its revocation set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pvpn import addressing
from p2pvpn.membership import canonical
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import (
    ROLE_ADMIN,
    Signer,
    is_dns_label,
    is_group,
    is_network_id,
    network_id,
    peer_id_bytes,
    public_key_of,
)

CERT_CONTEXT = b"p2pvpn/membership/certificate/1\x00"
MAX_CERT_SIZE = 4096
MAX_GROUPS = 16
MAX_LIFETIME = 400 * 86400
CLOCK_SKEW = 300
MEMBER_LIFETIME = 7 * 86400
ADMIN_LIFETIME = 365 * 86400
TEXT_PREFIX = "p2pvpn-cert1:"


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate whose bytes and signatures are good (time and revocation not yet checked)."""

    network_id: str
    peer_id: bytes
    name: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    roles: int
    groups: tuple[str, ...]
    not_before: int
    not_after: int
    issuer: bytes
    admin: Certificate | None
    """The signing admin's certificate; None when the owner signed."""
    raw: bytes
    """The SignedCertificate bytes, exactly as received (canonical)."""

    def has_role(self, role: int) -> bool:
        return bool(self.roles & role)


def verify_signature(public_key: bytes, context: bytes, message: bytes, signature: bytes) -> bool:
    """Strict RFC 8032 verification (OpenSSL): rejects a non-canonical S, so a signature has one form."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, context + message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_fields(c: pb.Certificate, expected_network: str) -> None:
    """Step 4 of §15.4: every field within its limits, in the order the document lists them."""
    if not is_network_id(c.network_id):
        raise MembershipError("certificate: network_id is not a network ID")
    if c.network_id != expected_network:
        raise MembershipError(f"certificate is for network {c.network_id}, not {expected_network}")
    if public_key_of(c.peer_id) is None:
        raise MembershipError("certificate: peer_id is not an Ed25519 peer ID")
    if not is_dns_label(c.name):
        raise MembershipError(f"certificate: name {c.name!r} is not a lowercase DNS label")
    if len(c.ipv4) != 4:
        raise MembershipError("certificate: ipv4 is not 4 bytes")
    v4 = int.from_bytes(c.ipv4, "big")
    net = addressing.OVERLAY_V4_NET
    if ipaddress.IPv4Address(c.ipv4) not in net or v4 in (int(net.network_address), int(net.broadcast_address)):
        raise MembershipError(f"certificate: ipv4 {ipaddress.IPv4Address(c.ipv4)} is not a host of {net}")
    if len(c.ipv6) != 16:
        raise MembershipError("certificate: ipv6 is not 16 bytes")
    prefix = addressing.network_v6_prefix(c.network_id)
    if ipaddress.IPv6Address(c.ipv6) not in prefix or c.ipv6[8:] == bytes(8):
        raise MembershipError(f"certificate: ipv6 {ipaddress.IPv6Address(c.ipv6)} is not a host of {prefix}")
    groups = list(c.groups)
    if len(groups) > MAX_GROUPS or not all(is_group(g) for g in groups):
        raise MembershipError(f"certificate: groups must be at most {MAX_GROUPS} names of [A-Za-z0-9._-]{{1,32}}")
    if any(a.encode() >= b.encode() for a, b in zip(groups, groups[1:])):
        raise MembershipError("certificate: groups must be sorted and unique")
    if not 0 < c.not_before < c.not_after or c.not_after - c.not_before > MAX_LIFETIME:
        raise MembershipError(f"certificate: validity must satisfy 0 < not_before < not_after <= not_before + {MAX_LIFETIME}")
    if len(c.issuer) != 32:
        raise MembershipError("certificate: issuer is not a 32-byte Ed25519 key")


def open_certificate(data: bytes, expected_network: str, *, _depth: int = 0) -> Certificate:
    """Steps 1-6 of §15.4: size, canonical bytes, fields, signer, signature. Raises MembershipError."""
    if len(data) > MAX_CERT_SIZE:
        raise MembershipError(f"certificate is {len(data)} bytes, more than {MAX_CERT_SIZE}")
    signed = canonical.parse(pb.SignedCertificate, data, "certificate")
    body = canonical.parse(pb.Certificate, signed.certificate, "certificate body")
    _check_fields(body, expected_network)
    if len(signed.signature) != 64:
        raise MembershipError("certificate: signature is not 64 bytes")
    admin: Certificate | None = None
    if signed.HasField("issuer_certificate"):
        if _depth > 0:
            raise MembershipError("certificate: an admin certificate must be signed by the owner (chain too long)")
        admin = open_certificate(signed.issuer_certificate.SerializeToString(deterministic=True), expected_network,
                                 _depth=1)
        if not admin.has_role(ROLE_ADMIN):
            raise MembershipError("certificate: its signer's certificate does not have the admin role")
        if admin.peer_id != peer_id_bytes(body.issuer):
            raise MembershipError("certificate: issuer key is not the key of the attached admin certificate")
    elif network_id(body.issuer) != expected_network:
        raise MembershipError("certificate: issuer is neither the network owner nor an admin")
    if not verify_signature(body.issuer, CERT_CONTEXT, signed.certificate, signed.signature):
        raise MembershipError("certificate: bad signature")
    return Certificate(
        network_id=body.network_id, peer_id=body.peer_id, name=body.name,
        ipv4=ipaddress.IPv4Address(body.ipv4), ipv6=ipaddress.IPv6Address(body.ipv6), roles=body.roles,
        groups=tuple(body.groups), not_before=body.not_before, not_after=body.not_after, issuer=body.issuer,
        admin=admin, raw=data,
    )


def check(cert: Certificate, now: float, revoked: Mapping[bytes, int], peer_id: bytes | None = None,
          skew: int = CLOCK_SKEW) -> None:
    """Steps 7-9 of §15.4: the holder, the clock (±``skew``) and revocations, for the cert and its admin's.

    ``skew`` is CLOCK_SKEW but in tests (the ``test_clock_skew`` config key), which shorten it to see expiry.
    """
    if peer_id is not None and cert.peer_id != peer_id:
        raise MembershipError("certificate belongs to another peer")
    for c, who in ((cert, "certificate"), (cert.admin, "its admin's certificate")):
        if c is None:
            continue
        if now < c.not_before - skew:
            raise MembershipError(f"{who} is not valid yet (from {c.not_before})")
        if now >= c.not_after + skew:
            raise MembershipError(f"{who} expired at {c.not_after}")
        if is_revoked(c, revoked):
            raise MembershipError(f"{who} is revoked")


def is_revoked(cert: Certificate, revoked: Mapping[bytes, int]) -> bool:
    """Revocation is by peer ID and time, never by certificate bytes: re-encoding cannot escape it."""
    threshold = revoked.get(cert.peer_id)
    return threshold is not None and cert.not_before < threshold


def verify(data: bytes, expected_network: str, now: float, revoked: Mapping[bytes, int],
           peer_id: bytes | None = None, skew: int = CLOCK_SKEW) -> Certificate:
    """The whole validation algorithm of §15.4."""
    cert = open_certificate(data, expected_network)
    check(cert, now, revoked, peer_id, skew)
    return cert


def issue(
    signer: Signer, *, network: str, peer_id: bytes, name: str, ipv4: ipaddress.IPv4Address,
    ipv6: ipaddress.IPv6Address, roles: int, groups: tuple[str, ...] | list[str], not_before: int, not_after: int,
) -> bytes:
    """Sign a certificate; returns the SignedCertificate bytes (checked as a verifier would)."""
    body = pb.Certificate(
        network_id=network, peer_id=peer_id, name=name, ipv4=ipv4.packed, ipv6=ipv6.packed, roles=roles,
        groups=sorted(set(groups), key=str.encode), not_before=not_before, not_after=not_after,
        issuer=signer.public_key,
    )
    _check_fields(body, network)
    body_bytes = canonical.encode(body)
    signed = pb.SignedCertificate(certificate=body_bytes, signature=signer.sign(CERT_CONTEXT + body_bytes))
    if signer.issuer_certificate is not None:
        signed.issuer_certificate.ParseFromString(signer.issuer_certificate)
    data = canonical.encode(signed)
    open_certificate(data, network)  # a signer never hands out what a verifier would refuse
    return data


def to_text(data: bytes) -> str:
    """The one-line printable form ``p2pvpn-cert1:<base64url>`` that ``admit`` prints and ``join`` reads."""
    return TEXT_PREFIX + canonical.b64(data)


def from_text(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(TEXT_PREFIX):
        raise MembershipError(f"not a certificate: it must start with {TEXT_PREFIX!r}")
    return canonical.unb64(text[len(TEXT_PREFIX):], "certificate")
