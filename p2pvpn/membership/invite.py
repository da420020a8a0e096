"""Invite tokens and the join exchange, sans-IO (docs/protocol.md §15.6-§15.7).

A token carries a random secret. The joiner never sends the secret itself:
it sends ``invite_id`` (a hash of the secret, so the inviter can find the
invite) and an HMAC of its own peer ID keyed with the secret, so a copy of
the request is worthless to anyone with another peer ID. ``Pending`` is the
inviter's side: expiry, use counting, and idempotent retries (a joiner whose
answer was lost gets the same certificate again without spending a use).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from enum import IntEnum

import multiaddr

from p2pvpn.membership import canonical
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import is_dns_label, is_network_id, public_key_of

PROTOCOL_ID = "/p2pvpn/join/1.0.0"
TOKEN_PREFIX = "p2pvpn-invite1:"
INVITE_ID_CONTEXT = b"p2pvpn/membership/invite-id/1\x00"
JOIN_PROOF_CONTEXT = b"p2pvpn/membership/join-proof/1\x00"
SECRET_LEN = 16
INVITE_ID_LEN = 16
MAX_TOKEN_LEN = 4096
MAX_INVITE_ADDRS = 8
MAX_ADDR_LEN = 512
MAX_REQUEST_SIZE = 8192
MAX_RESPONSE_SIZE = 131072
DEFAULT_EXPIRY = 24 * 3600


class JoinStatus(IntEnum):
    OK = 0
    UNKNOWN_INVITE = 1
    EXPIRED = 2
    USED_UP = 3
    BAD_PROOF = 4
    BAD_REQUEST = 5
    UNAVAILABLE = 6


@dataclass(frozen=True, slots=True)
class Invite:
    network_id: str
    inviter: bytes
    addrs: tuple[bytes, ...]
    secret: bytes
    expires: int
    network_name: str = ""


def invite_id(secret: bytes) -> bytes:
    return hashlib.sha256(INVITE_ID_CONTEXT + secret).digest()[:INVITE_ID_LEN]


def join_proof(secret: bytes, network: str, joiner: bytes) -> bytes:
    """HMAC-SHA-256(secret, context || network_id || 0x00 || joiner peer_id_bytes)."""
    return hmac.new(secret, JOIN_PROOF_CONTEXT + network.encode() + b"\x00" + joiner, hashlib.sha256).digest()


def proof_ok(secret: bytes, network: str, joiner: bytes, proof: bytes) -> bool:
    return hmac.compare_digest(join_proof(secret, network, joiner), proof)


def _check_invite(inv: pb.Invite) -> None:
    if not is_network_id(inv.network_id):
        raise MembershipError("invite: network_id is not a network ID")
    if public_key_of(inv.inviter) is None:
        raise MembershipError("invite: inviter is not an Ed25519 peer ID")
    if not 1 <= len(inv.addrs) <= MAX_INVITE_ADDRS:
        raise MembershipError(f"invite: needs 1..{MAX_INVITE_ADDRS} inviter addresses")
    for raw in inv.addrs:
        if len(raw) > MAX_ADDR_LEN:
            raise MembershipError("invite: an address is too long")
        try:
            ok = multiaddr.Multiaddr(str(multiaddr.Multiaddr(raw))).to_bytes() == raw  # parsing is lazy: force it
        except Exception:  # multiaddr raises several unrelated types for bad input
            ok = False
        if not ok:
            raise MembershipError("invite: an address is not a binary multiaddr")
    if len(inv.secret) != SECRET_LEN:
        raise MembershipError(f"invite: secret is not {SECRET_LEN} bytes")
    if inv.expires == 0:
        raise MembershipError("invite: no expiry")
    if inv.network_name and not (len(inv.network_name.encode()) <= 64 and inv.network_name.isprintable()):
        raise MembershipError("invite: network_name is not a printable label of at most 64 bytes")


def encode_token(invite: Invite) -> str:
    msg = pb.Invite(network_id=invite.network_id, inviter=invite.inviter, addrs=list(invite.addrs),
                    secret=invite.secret, expires=invite.expires, network_name=invite.network_name)
    _check_invite(msg)
    return TOKEN_PREFIX + canonical.b64(canonical.encode(msg))


def parse_token(text: str) -> Invite:
    """The token's content, or a MembershipError saying what is wrong with it (expiry is checked elsewhere)."""
    text = text.strip()
    if len(text) > MAX_TOKEN_LEN:
        raise MembershipError(f"invite token is longer than {MAX_TOKEN_LEN} characters")
    if not text.startswith(TOKEN_PREFIX):
        raise MembershipError(f"not an invite token: it must start with {TOKEN_PREFIX!r}")
    msg = canonical.parse(pb.Invite, canonical.unb64(text[len(TOKEN_PREFIX):], "invite token"), "invite token")
    _check_invite(msg)
    return Invite(network_id=msg.network_id, inviter=msg.inviter, addrs=tuple(msg.addrs), secret=msg.secret,
                  expires=msg.expires, network_name=msg.network_name)


def make_request(invite: Invite, joiner: bytes) -> bytes:
    return canonical.encode(pb.JoinRequest(invite_id=invite_id(invite.secret),
                                           proof=join_proof(invite.secret, invite.network_id, joiner)))


def parse_request(data: bytes) -> pb.JoinRequest:
    if len(data) > MAX_REQUEST_SIZE:
        raise MembershipError("join request too large")
    req = canonical.parse(pb.JoinRequest, data, "join request")
    if req.HasField("renew"):
        if req.invite_id or req.proof:
            raise MembershipError("join request: renew excludes invite_id and proof")
    elif len(req.invite_id) != INVITE_ID_LEN or len(req.proof) != 32:
        raise MembershipError("join request: invite_id must be 16 bytes and proof 32")
    return req


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    status: JoinStatus
    message: str = ""
    certificate: bytes = b""
    network_name: str = ""
    bootstrap: tuple[bytes, ...] = ()
    revocations: bytes = b""


def encode_response(answer: JoinAnswer) -> bytes:
    msg = pb.JoinResponse(status=int(answer.status), message=answer.message, network_name=answer.network_name,
                          bootstrap=list(answer.bootstrap[:MAX_INVITE_ADDRS]))
    if answer.certificate:
        msg.certificate.ParseFromString(answer.certificate)
    if answer.revocations:
        msg.revocations.ParseFromString(answer.revocations)
    return canonical.encode(msg)


def parse_response(data: bytes) -> JoinAnswer:
    """Bytes to a JoinAnswer; the certificate inside still has to be verified by the caller."""
    if len(data) > MAX_RESPONSE_SIZE:
        raise MembershipError("join response too large")
    msg = canonical.parse(pb.JoinResponse, data, "join response")
    try:
        status = JoinStatus(msg.status)
    except ValueError:
        status = JoinStatus.UNAVAILABLE
    return JoinAnswer(
        status=status, message=msg.message,
        certificate=canonical.encode(msg.certificate) if msg.HasField("certificate") else b"",
        network_name=msg.network_name, bootstrap=tuple(msg.bootstrap[:MAX_INVITE_ADDRS]),
        revocations=canonical.encode(msg.revocations) if msg.HasField("revocations") else b"",
    )


@dataclass
class Pending:
    """An invite the inviter has handed out and not yet used up (stored as JSON by ``store``)."""

    secret: bytes
    expires: int
    uses: int
    name: str = ""
    roles: int = 0
    groups: tuple[str, ...] = ()
    redeemed: dict[str, str] = field(default_factory=dict)
    """peer ID (base58) -> the certificate it got, as text: a retry gets the same answer."""

    def __post_init__(self) -> None:
        if self.name and not is_dns_label(self.name):
            raise MembershipError(f"invite: name {self.name!r} is not a lowercase DNS label")

    def judge(self, network: str, joiner: bytes, joiner_text: str, proof: bytes, now: float) -> JoinStatus:
        """Whether this joiner may redeem now; OK means: issue (or re-send) and then call ``redeem``."""
        if not proof_ok(self.secret, network, joiner, proof):
            return JoinStatus.BAD_PROOF
        if joiner_text in self.redeemed:
            return JoinStatus.OK
        if now >= self.expires:
            return JoinStatus.EXPIRED
        if len(self.redeemed) >= self.uses:
            return JoinStatus.USED_UP
        return JoinStatus.OK

    def redeem(self, joiner_text: str, certificate_text: str) -> None:
        self.redeemed[joiner_text] = certificate_text

    def used_up(self, now: float) -> bool:
        return now >= self.expires or len(self.redeemed) >= self.uses
