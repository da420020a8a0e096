"""The signed policy: canonical bytes, signers, sequence numbers, DHT selection (docs/protocol.md §17.1-§17.4)."""

from __future__ import annotations

import pytest

from p2pvpn.discovery.record import RecordError
from p2pvpn.membership import cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, signer_from_seed
from p2pvpn.policy import policy_pb2 as pb
from p2pvpn.policy.dhtkey import PolicyValidator, policy_key
from p2pvpn.policy.model import Action, PolicyError, Proto, Rule, Selector, open_bytes, open_policy, sign_policy
from policy.conftest import Keys

T0 = 1767225600
RULES = [Rule(Action.DENY, Selector(group="A"), Selector(group="B"), Proto.TCP, (22, 22))]


def admin_signer(keys: Keys, n: int = 1, lifetime: int = 86400) -> tuple[object, bytes]:
    from p2pvpn import addressing
    a = addressing.derive(keys.pid[n], keys.nid)
    admin_cert = cert.issue(keys.owner, network=keys.nid, peer_id=keys.pid[n], name="alpha", ipv4=a.ipv4,
                            ipv6=a.ipv6, roles=ROLE_ADMIN, groups=(), not_before=T0, not_after=T0 + lifetime)
    return signer_from_seed(bytes([n]) * 32, admin_cert), admin_cert


def test_owner_signed_policy_round_trips(keys: Keys) -> None:
    data = sign_policy(keys.owner, keys.nid, 3, Action.ALLOW, RULES)
    p = open_bytes(data, keys.nid)
    assert (p.seq, p.default, p.rules, p.admin) == (3, Action.ALLOW, tuple(RULES), None)


def test_admin_signed_policy_needs_a_valid_admin_certificate(keys: Keys) -> None:
    signer, admin_cert = admin_signer(keys)
    data = sign_policy(signer, keys.nid, 1, Action.DENY, RULES)  # type: ignore[arg-type]
    assert open_policy(data, keys.nid, T0 + 10, {}).admin is not None
    with pytest.raises(PolicyError, match="expired"):
        open_policy(data, keys.nid, T0 + 2 * 86400, {})
    with pytest.raises(PolicyError, match="revoked"):
        open_policy(data, keys.nid, T0 + 10, {keys.pid[1]: T0 + 1})


def test_a_member_without_admin_role_cannot_sign(keys: Keys) -> None:
    from p2pvpn import addressing
    a = addressing.derive(keys.pid[2], keys.nid)
    member = cert.issue(keys.owner, network=keys.nid, peer_id=keys.pid[2], name="bravo", ipv4=a.ipv4, ipv6=a.ipv6,
                        roles=0, groups=(), not_before=T0, not_after=T0 + 86400)
    with pytest.raises(PolicyError, match="not the admin"):
        sign_policy(signer_from_seed(bytes([2]) * 32, member), keys.nid, 1, Action.ALLOW, RULES)
    with pytest.raises(PolicyError, match="neither the network owner"):
        sign_policy(signer_from_seed(bytes([2]) * 32), keys.nid, 1, Action.ALLOW, RULES)


def test_another_network_is_refused(keys: Keys) -> None:
    other = signer_from_seed(bytes([0x11]) * 32)
    from p2pvpn.membership.network import network_id
    data = sign_policy(other, network_id(other.public_key), 1, Action.ALLOW, [])
    with pytest.raises(PolicyError, match="for network"):
        open_bytes(data, keys.nid)


def test_any_changed_byte_is_refused(keys: Keys) -> None:
    data = sign_policy(keys.owner, keys.nid, 1, Action.ALLOW, RULES)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(MembershipError):
            open_bytes(bytes(bad), keys.nid)


def test_non_canonical_and_unknown_fields_are_refused(keys: Keys) -> None:
    data = sign_policy(keys.owner, keys.nid, 1, Action.ALLOW, RULES)
    with pytest.raises(MembershipError, match="canonical"):
        open_bytes(data + bytes.fromhex("7801"), keys.nid)
    signed = pb.SignedPolicy.FromString(data)
    swapped = (bytes([0x12, 64]) + signed.signature + bytes([0x0a, len(signed.policy)]) + signed.policy)
    with pytest.raises(MembershipError, match="canonical"):
        open_bytes(swapped, keys.nid)


@pytest.mark.parametrize("rule,message", [
    (pb.Rule(action=3), "action"),
    (pb.Rule(action=1, proto=2), "proto"),
    (pb.Rule(action=1, proto=1, port_first=1, port_last=1), "ports need"),
    (pb.Rule(action=1, proto=6, port_first=9, port_last=8), "port_first <= port_last"),
    (pb.Rule(action=1, proto=6, port_first=1, port_last=70000), "port_last <= 65535"),
    (pb.Rule(action=1, from_group="a", from_peer=b"x"), "both set"),
    (pb.Rule(action=1, to_group="a b"), "not a group"),
    (pb.Rule(action=1, from_peer=b"\x00" * 38), "not an Ed25519"),
])
def test_bad_rules_are_refused(keys: Keys, rule: pb.Rule, message: str) -> None:
    body = pb.Policy(network_id=keys.nid, seq=1, default_action=1, rules=[rule], issuer=keys.owner.public_key)
    raw = body.SerializeToString(deterministic=True)
    from p2pvpn.policy.model import POLICY_CONTEXT
    data = pb.SignedPolicy(policy=raw, signature=keys.owner.sign(POLICY_CONTEXT + raw)).SerializeToString(
        deterministic=True)
    with pytest.raises(PolicyError, match=message):
        open_bytes(data, keys.nid)


def test_seq_zero_and_bad_default_are_refused(keys: Keys) -> None:
    from p2pvpn.policy.model import POLICY_CONTEXT
    for body, message in ((pb.Policy(network_id=keys.nid, seq=0, default_action=1), "seq"),
                          (pb.Policy(network_id=keys.nid, seq=1, default_action=0), "default_action")):
        body.issuer = keys.owner.public_key
        raw = body.SerializeToString(deterministic=True)
        data = pb.SignedPolicy(policy=raw, signature=keys.owner.sign(POLICY_CONTEXT + raw)).SerializeToString(
            deterministic=True)
        with pytest.raises(PolicyError, match=message):
            open_bytes(data, keys.nid)


def test_higher_seq_wins_then_larger_bytes(keys: Keys) -> None:
    one = open_bytes(sign_policy(keys.owner, keys.nid, 1, Action.DENY, RULES), keys.nid)
    two = open_bytes(sign_policy(keys.owner, keys.nid, 2, Action.ALLOW, []), keys.nid)
    also_two = open_bytes(sign_policy(keys.owner, keys.nid, 2, Action.DENY, []), keys.nid)
    assert two.rank() > one.rank()
    assert max(two, also_two, key=lambda p: p.rank()).raw == max(two.raw, also_two.raw)


def test_dht_validator_selects_the_best_and_refuses_garbage(keys: Keys) -> None:
    v = PolicyValidator(keys.nid, lambda: {}, lambda: T0)
    key = policy_key(keys.nid)
    one = sign_policy(keys.owner, keys.nid, 1, Action.DENY, RULES)
    two = sign_policy(keys.owner, keys.nid, 2, Action.ALLOW, [])
    v.validate(key, one)
    assert v.select(key, [one, b"junk", two]) == 2
    with pytest.raises(RecordError):
        v.validate(key, b"junk")
    with pytest.raises(RecordError):
        v.validate(f"/p2pvpn/{keys.nid}/revocations", one)
    assert key == f"/p2pvpn/{keys.nid}/policy"
