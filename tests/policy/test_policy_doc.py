"""docs/protocol.md §17 stays true: the schema is the proto file, and the policy vector is what the code signs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import network_id, peer_id_bytes, signer_from_seed
from p2pvpn.policy import policy_pb2 as pb
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import POLICY_CONTEXT, Action, Proto, Rule, Selector, open_bytes, sign_policy
from policy.packets import SYN, tcp, udp

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "protocol.md").read_text()
SECTION = DOC[DOC.index("## 17. Network policy"):]
OWNER = signer_from_seed(bytes([0x10]) * 32)
NID = network_id(OWNER.public_key)
PEER1 = peer_id_bytes(signer_from_seed(bytes([1]) * 32).public_key)
RULES = [Rule(Action.DENY, Selector(group="A"), Selector(group="B"), Proto.TCP, (22, 22)),
         Rule(Action.ALLOW, Selector(peer=PEER1), Selector(), Proto.UDP, (5000, 5010))]


def vector() -> bytes:
    m = re.search(r"^Policy P, (\d+) bytes:\n\n```\n([0-9a-f\n]+)```", SECTION, flags=re.MULTILINE)
    assert m, "no hex block for policy P in §17"
    data = bytes.fromhex(m.group(2).replace("\n", ""))
    assert len(data) == int(m.group(1))
    return data


def test_schema_in_the_document_is_the_proto_file() -> None:
    proto = (REPO / "proto" / "policy.proto").read_text()
    schema = proto[proto.index('syntax = "proto3";'):].strip()
    assert f"```proto\n{schema}\n```" in SECTION


def test_context_in_the_document() -> None:
    assert f"`{POLICY_CONTEXT.hex()}` ({len(POLICY_CONTEXT)} bytes" in SECTION


def test_policy_vector_is_what_the_code_signs_and_opens() -> None:
    data = vector()
    assert sign_policy(OWNER, NID, 1, Action.ALLOW, RULES) == data
    p = open_bytes(data, NID)
    assert (p.seq, p.default, list(p.rules)) == (1, Action.ALLOW, RULES)
    body = pb.SignedPolicy.FromString(data).policy
    assert len(body) == 140
    rules = [r.SerializeToString(deterministic=True).hex() for r in pb.Policy.FromString(body).rules]
    assert rules[0] == "0802120141220142300638164016" and "`0802 120141 220142 3006 3816 4016` (14 bytes)" in SECTION
    assert rules[1] == "08011a26" + PEER1.hex() + "3011388827409227" and len(bytes.fromhex(rules[1])) == 50


def test_policy_vector_evaluation_as_described() -> None:
    p = open_bytes(vector(), NID)
    a_member = b"\x00" * 38
    groups = {a_member: ("A",), PEER1: ()}
    fw = Firewall(p, b"\x01" * 38, ("B",), lambda peer: groups.get(peer, ()))
    them, us = "100.64.0.1", "100.64.0.2"
    assert fw.inbound(a_member, tcp(them, us, 40000, 22, SYN), 0, 0.0) == "rule"
    assert fw.inbound(a_member, tcp(them, us, 40001, 80, SYN), 0, 0.0) is None
    assert fw.inbound(PEER1, udp(them, us, 1, 5005), 0, 0.0) is None
    assert Firewall(p, b"\x01" * 38, (), lambda peer: ()).rules == (RULES[1],)  # rule 1 is only about group B


def test_negative_vectors() -> None:
    data = vector()
    with pytest.raises(MembershipError):
        open_bytes(data + bytes.fromhex("7801"), NID)
    for index in (0, 50, len(data) - 1):
        bad = bytearray(data)
        bad[index] ^= 0x80
        with pytest.raises(MembershipError):
            open_bytes(bytes(bad), NID)
