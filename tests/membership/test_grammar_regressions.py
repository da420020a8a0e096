"""Regressions found by fuzzing the membership parsers (tests/fuzz/fuzz_cert.py, fuzz_invite.py).

Python's ``$`` also matches before a final newline, so ``re.match(r"^...$")``
let "alpha\\n" pass as a DNS label, "ops\\n" as a group and a network ID with
a trailing newline through an invite token. Signed certificates carried such
names (a second spelling of a member's name, a line break in ``members``).
"""

from __future__ import annotations

import pytest

from p2pvpn.membership import canonical, cert, invite
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import is_dns_label, is_group, is_network_id, network_id, signer_from_seed

OWNER = signer_from_seed(bytes([0x10]) * 32)
NID = network_id(OWNER.public_key)


@pytest.mark.parametrize("check, good", [(is_dns_label, "alpha"), (is_group, "ops"), (is_network_id, NID)])
def test_a_final_newline_is_not_part_of_any_grammar(check: object, good: str) -> None:
    assert check(good)  # type: ignore[operator]
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        assert not check(bad), repr(bad)  # type: ignore[operator]


def test_an_owner_signed_certificate_named_with_a_final_newline_is_refused() -> None:
    from fuzz.fuzz_cert import _A  # tests/ is on sys.path (pytest prepends the first directory without __init__.py)

    body = pb.Certificate.FromString(pb.SignedCertificate.FromString(_A).certificate)
    body.name = "alpha\n"
    data = canonical.encode(body)
    signed = canonical.encode(pb.SignedCertificate(certificate=data, signature=OWNER.sign(cert.CERT_CONTEXT + data)))
    with pytest.raises(MembershipError, match="DNS label"):
        cert.open_certificate(signed, NID)


def test_an_invite_whose_network_id_ends_in_a_newline_is_refused() -> None:
    msg = pb.Invite(network_id=NID + "\n", inviter=bytes.fromhex("002408011220") + bytes(32), addrs=[
        bytes.fromhex("04c6120001060da2")], secret=bytes(16), expires=1767312000)
    with pytest.raises(MembershipError, match="network ID"):
        invite.parse_token(invite.TOKEN_PREFIX + canonical.b64(canonical.encode(msg)))
