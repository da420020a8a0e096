"""Invite tokens, join proofs and the inviter's use counting (§15.6-§15.7)."""

from __future__ import annotations

import multiaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.membership import invite
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import Invite, JoinAnswer, JoinStatus, Pending

from .conftest import T0, Net

ADDR = multiaddr.Multiaddr("/ip4/198.18.0.1/tcp/4242").to_bytes()


def make(net: Net, **kw: object) -> Invite:
    args: dict[str, object] = dict(network_id=net.nid, inviter=net.pids[1], addrs=(ADDR,), secret=bytes(range(16)),
                                   expires=T0 + 86400, network_name="lab")
    args.update(kw)
    return Invite(**args)  # type: ignore[arg-type]


def test_token_round_trip_is_one_printable_word(net: Net) -> None:
    tok = invite.encode_token(make(net))
    assert tok.startswith("p2pvpn-invite1:") and tok.isprintable() and " " not in tok
    assert invite.parse_token(f"  {tok}\n") == make(net)


@pytest.mark.parametrize(("text", "message"), [
    ("", "must start with"), ("p2pvpn-cert1:AAAA", "must start with"), ("p2pvpn-invite1:***", "base64url"),
    ("p2pvpn-invite1:" + "A" * 5000, "longer than"), ("p2pvpn-invite1:CgF4", "not a network ID"),
])
def test_bad_tokens_get_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(MembershipError, match=message):
        invite.parse_token(text)


def test_token_fields_are_checked(net: Net) -> None:
    for kw, message in (({"secret": b"short"}, "secret"), ({"addrs": ()}, "addresses"),
                        ({"inviter": b"\x12\x20" + bytes(32)}, "inviter"), ({"expires": 0}, "expiry"),
                        ({"addrs": (b"\xff\xff",)}, "multiaddr")):
        with pytest.raises(MembershipError, match=message):
            invite.encode_token(make(net, **kw))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_truncated_or_flipped_tokens_never_crash(net: Net, data: st.DataObject) -> None:
    tok = invite.encode_token(make(net))
    cut = data.draw(st.integers(len("p2pvpn-invite1:"), len(tok)))
    text = tok[:cut]
    if data.draw(st.booleans()) and cut > len("p2pvpn-invite1:"):
        pos = data.draw(st.integers(len("p2pvpn-invite1:"), cut - 1))
        text = text[:pos] + data.draw(st.sampled_from("AZaz09-_")) + text[pos + 1:]
    try:
        parsed = invite.parse_token(text)
    except MembershipError:
        return
    assert invite.encode_token(parsed) == text  # whatever parses is canonical


def test_proof_binds_the_secret_to_the_joiner(net: Net) -> None:
    inv = make(net)
    proof = invite.join_proof(inv.secret, net.nid, net.pids[2])
    assert invite.proof_ok(inv.secret, net.nid, net.pids[2], proof)
    assert not invite.proof_ok(inv.secret, net.nid, net.pids[3], proof)  # a snooped request is no use to peer 3
    assert not invite.proof_ok(bytes(16), net.nid, net.pids[2], proof)


def test_request_and_response_round_trip(net: Net) -> None:
    inv = make(net)
    req = invite.parse_request(invite.make_request(inv, net.pids[2]))
    assert req.invite_id == invite.invite_id(inv.secret)
    answer = JoinAnswer(JoinStatus.OK, "welcome", net.admin_cert, "lab", (ADDR,), b"")
    assert invite.parse_response(invite.encode_response(answer)) == answer
    with pytest.raises(MembershipError):
        invite.parse_request(b"\x0a\x01\x00")


def test_pending_invite_counts_uses_and_expires(net: Net) -> None:
    p = Pending(secret=bytes(range(16)), expires=T0 + 100, uses=1)
    proof2 = invite.join_proof(p.secret, net.nid, net.pids[2])
    proof3 = invite.join_proof(p.secret, net.nid, net.pids[3])
    assert p.judge(net.nid, net.pids[2], "p2", proof3, T0) is JoinStatus.BAD_PROOF
    assert p.judge(net.nid, net.pids[2], "p2", proof2, T0) is JoinStatus.OK
    p.redeem("p2", "cert-for-2")
    assert p.judge(net.nid, net.pids[2], "p2", proof2, T0 + 1) is JoinStatus.OK  # a retry: same answer
    assert p.judge(net.nid, net.pids[3], "p3", proof3, T0 + 1) is JoinStatus.USED_UP
    q = Pending(secret=bytes(16), expires=T0 + 100, uses=5)
    late = invite.join_proof(q.secret, net.nid, net.pids[3])
    assert q.judge(net.nid, net.pids[3], "p3", late, T0 + 100) is JoinStatus.EXPIRED
    assert p.used_up(T0) and q.used_up(T0 + 100) and not q.used_up(T0)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=300))
def test_join_messages_fuzz_to_one_error_type(blob: bytes) -> None:
    for parse in (invite.parse_request, invite.parse_response):
        try:
            parse(blob)
        except MembershipError:
            pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_token_parser_fuzz_to_one_error_type(text: str) -> None:
    try:
        inv = invite.parse_token("p2pvpn-invite1:" + text)
    except MembershipError:
        return
    assert invite.encode_token(inv) == "p2pvpn-invite1:" + text.strip()
