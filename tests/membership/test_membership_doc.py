"""docs/protocol.md §15 stays true: schema, network ID and the certificate, list and invite vectors.

The vectors are what a Go implementation will be checked against, so they
are parsed from the document and compared with the code in both directions:
the code reproduces the bytes, and the bytes verify.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

import multiaddr
import pytest

from p2pvpn import addressing
from p2pvpn.membership import cert, invite, network, revocation
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import network_id, peer_id_bytes, signer_from_seed

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "protocol.md").read_text()
SECTION = DOC[DOC.index("## 15. Networks with an owner"):]
T0 = 1767225600
OWNER = signer_from_seed(bytes([0x10]) * 32)
NID = network_id(OWNER.public_key)
PID = {n: peer_id_bytes(signer_from_seed(bytes([n]) * 32).public_key) for n in (1, 2, 3)}


def hex_block(title: str) -> bytes:
    m = re.search(rf"^{re.escape(title)}, (\d+) bytes:\n\n```\n([0-9a-f\n]+)```", SECTION, flags=re.MULTILINE)
    assert m, f"no hex block {title!r} in §15"
    data = bytes.fromhex(m.group(2).replace("\n", ""))
    assert len(data) == int(m.group(1))
    return data


def table_value(item: str) -> str:
    m = re.search(rf"^\| {re.escape(item)} \| `([^`]+)` \|$", SECTION, flags=re.MULTILINE)
    assert m, f"no table row {item!r} in §15"
    return m.group(1)


def cert_a() -> bytes:
    a = addressing.derive(PID[1], NID)
    return cert.issue(OWNER, network=NID, peer_id=PID[1], name="alpha", ipv4=a.ipv4, ipv6=a.ipv6, roles=5, groups=(),
                      not_before=T0, not_after=T0 + 365 * 86400)


def test_schema_in_the_document_is_the_proto_file() -> None:
    proto = (REPO / "proto" / "membership.proto").read_text()
    schema = proto[proto.index('syntax = "proto3";'):].strip()
    assert f"```proto\n{schema}\n```" in SECTION


def test_network_id_vector() -> None:
    assert table_value("owner key `K`") == OWNER.public_key.hex()
    digest = hashlib.sha256(network.NETWORK_ID_CONTEXT + bytes.fromhex("08011220") + OWNER.public_key).hexdigest()
    assert table_value("SHA-256 of the input") == digest
    assert table_value("network ID") == NID
    assert ipaddress.IPv6Network(table_value("ULA /64")) == addressing.network_v6_prefix(NID)


def test_contexts_in_the_document() -> None:
    for context in (cert.CERT_CONTEXT, revocation.REVOCATION_CONTEXT):
        assert f"`{context.hex()}`" in SECTION
        assert f"({len(context)} bytes" in SECTION


def test_certificate_a_vector() -> None:
    doc = hex_block("Certificate A")
    assert doc == cert_a()
    annotated = re.search(r"The\n`Certificate` \(153 bytes\):\n\n```\n(.*?)```", SECTION, flags=re.DOTALL)
    assert annotated
    tokens = [t for t in annotated.group(1).split() if re.fullmatch(r"(?:[0-9a-f]{2})+", t)]
    assert bytes.fromhex("".join(tokens)) == pb.SignedCertificate.FromString(doc).certificate
    c = cert.verify(doc, NID, T0, {}, PID[1])
    assert (str(c.ipv4), str(c.ipv6)) == ("100.91.146.140", "fdf0:4a77:a1c4:0:48a5:a4d8:9f45:36b2")


def test_certificate_b_vector_and_its_validity_window() -> None:
    doc = hex_block("Certificate B")
    a = addressing.derive(PID[2], NID)
    assert doc == cert.issue(signer_from_seed(bytes([1]) * 32, cert_a()), network=NID, peer_id=PID[2], name="bravo",
                             ipv4=a.ipv4, ipv6=a.ipv6, roles=2, groups=("ops", "dev"), not_before=T0,
                             not_after=T0 + 7 * 86400)
    assert cert.verify(doc, NID, T0 - 300, {}, PID[2]).groups == ("dev", "ops")
    assert cert.verify(doc, NID, 1767830700 - 1, {}, PID[2])
    with pytest.raises(MembershipError, match="expired"):
        cert.verify(doc, NID, 1767830700, {}, PID[2])
    with pytest.raises(MembershipError, match="revoked"):
        cert.verify(doc, NID, T0 + 10, {PID[1]: T0 + 1}, PID[2])


def test_revocation_list_vector() -> None:
    doc = hex_block("Revocation list L")
    assert doc == revocation.sign_list(OWNER, NID, 1, {PID[3]: 1767312000})
    assert revocation.open_list(doc, NID, T0, {}).entries == {PID[3]: 1767312000}


def test_invite_vector() -> None:
    m = re.search(r"^(p2pvpn-invite1:\S+)$", SECTION, flags=re.MULTILINE)
    assert m
    inv = invite.Invite(NID, PID[1], (multiaddr.Multiaddr("/ip4/198.18.0.1/tcp/4242").to_bytes(),), bytes(range(16)),
                        1767312000, "lab")
    assert m.group(1) == invite.encode_token(inv)
    assert invite.parse_token(m.group(1)) == inv
    assert table_value("`invite_id`") == invite.invite_id(inv.secret).hex()
    assert table_value("`proof` for peer 2") == invite.join_proof(inv.secret, NID, PID[2]).hex()
    assert table_value("`JoinRequest` of peer 2") == invite.make_request(inv, PID[2]).hex()
