"""Fuzz target: invite tokens and the join exchange, ``p2pvpn.membership.invite`` (§15.6-§15.7).

Contract: hostile text or bytes raise ``MembershipError`` and nothing else
in ``parse_token`` (``p2pvpn join TOKEN``), ``parse_request`` (what an
inviter reads from a stranger on /p2pvpn/join/1.0.0) and ``parse_response``
(what a joiner reads back).

The first input byte picks what the rest is (so one corpus covers all):

0. token text;
1. an ``Invite`` message that the harness wraps into a token, so mutations
   reach the field checks behind the base64url;
2. a ``JoinRequest``, then judged by a pending invite as the inviter would;
3. a ``JoinResponse``.

Properties: a token that parses encodes back to the same text, names a
network ID of the documented grammar (a full-string pattern, independent
of the module's) and has 1..8 addresses that print and parse back; a
request that parses is canonical and is judged without raising, OK only
with the right proof; a response that parses is a fixed point of
``encode_response`` then ``parse_response``.

Seeds: the invite vector of docs/protocol.md §15.9 and the messages of a
join of peer 2 with it (a request, a renewal, an answer).
"""

from __future__ import annotations

import re

import multiaddr

from p2pvpn.membership import canonical, invite
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import network_id, peer_id_bytes, signer_from_seed

from .fuzz_cert import _A, _vector_b

EXPECTED = (MembershipError,)
MAX_LEN = 8400  # over MAX_REQUEST_SIZE (8192) + the mode byte

_OWNER = signer_from_seed(bytes([0x10]) * 32)
_NID = network_id(_OWNER.public_key)
_PID = {n: peer_id_bytes(signer_from_seed(bytes([n]) * 32).public_key) for n in (1, 2, 3)}
_NETWORK_ID = re.compile(r"[a-z2-7]{32}")
_INVITE = invite.Invite(_NID, _PID[1], (multiaddr.Multiaddr("/ip4/198.18.0.1/tcp/4242").to_bytes(),),
                        bytes(range(16)), 1767312000, "lab")
_NOW = 1767225600


def seeds() -> list[bytes]:
    token = invite.encode_token(_INVITE)
    raw = canonical.unb64(token[len(invite.TOKEN_PREFIX):], "token")
    renew = pb.JoinRequest()
    renew.renew.ParseFromString(_vector_b())
    answer = invite.JoinAnswer(invite.JoinStatus.OK, "", _vector_b(), "lab", (
        multiaddr.Multiaddr(f"/ip4/198.18.0.1/tcp/4242/p2p/{_peer_text(_PID[1])}").to_bytes(),))
    refused = invite.JoinAnswer(invite.JoinStatus.USED_UP, "invite already used")
    return [
        b"\x00" + token.encode(),
        b"\x01" + raw,
        b"\x02" + invite.make_request(_INVITE, _PID[2]),
        b"\x02" + canonical.encode(renew),
        b"\x03" + invite.encode_response(answer),
        b"\x03" + invite.encode_response(refused),
        b"\x03" + _A,  # a certificate is not a response, but shares its field numbers
    ]


def _peer_text(raw: bytes) -> str:
    from libp2p.peer.id import ID

    return str(ID(raw))


def _token(text: str) -> None:
    try:
        inv = invite.parse_token(text)
    except MembershipError:
        return
    assert invite.encode_token(inv) == text.strip(), "a token with two spellings"
    assert _NETWORK_ID.fullmatch(inv.network_id), f"network ID {inv.network_id!r} outside its grammar"
    assert len(inv.secret) == invite.SECRET_LEN and 1 <= len(inv.addrs) <= invite.MAX_INVITE_ADDRS
    for raw in inv.addrs:
        assert multiaddr.Multiaddr(str(multiaddr.Multiaddr(raw))).to_bytes() == raw
    assert inv.network_name.isprintable() and "\n" not in inv.network_name


def _request(data: bytes) -> None:
    try:
        req = invite.parse_request(data)
    except MembershipError:
        return
    assert canonical.encode(req) == data
    if req.HasField("renew"):
        return
    pending = invite.Pending(_INVITE.secret, _INVITE.expires, 1)
    for joiner in (_PID[2], _PID[3]):
        status = pending.judge(_NID, joiner, _peer_text(joiner), req.proof, _NOW)
        right = req.proof == invite.join_proof(_INVITE.secret, _NID, joiner)
        assert (status == invite.JoinStatus.OK) == right, (status, right)


def _response(data: bytes) -> None:
    try:
        answer = invite.parse_response(data)
    except MembershipError:
        return
    assert invite.parse_response(invite.encode_response(answer)) == answer, "a response that changes when re-sent"


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        _token(rest.decode("utf-8", "replace"))
    elif mode == 1:
        _token(invite.TOKEN_PREFIX + canonical.b64(rest) if rest else invite.TOKEN_PREFIX)
    elif mode == 2:
        _request(rest)
    else:
        _response(rest)
