"""The network policy as plain types, and its signed form: sign, open, pick the best (docs/protocol.md §17.1-§17.3).

A policy is one object for the whole network, signed by the owner or an
admin (the same signers as revocation lists, §15.5) and numbered; unlike
revocation lists, policies never merge: the valid one with the highest
``seq`` (then the larger bytes) is the network's policy, everywhere.
Protobuf types stay in this module; the rest of the package sees ``Policy``
and ``Rule``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from p2pvpn.membership import canonical
from p2pvpn.membership.cert import Certificate, check, open_certificate, verify_signature
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, Signer, is_group, is_network_id, network_id, peer_id_bytes, \
    public_key_of
from p2pvpn.policy import policy_pb2 as pb

POLICY_CONTEXT = b"p2pvpn/policy/1\x00"
MAX_RULES = 256
MAX_POLICY_SIZE = 32768


class PolicyError(MembershipError):
    """A policy (file, bytes or signature) is unacceptable; the message says why, in one line."""


class Action(enum.IntEnum):
    ALLOW = 1
    DENY = 2


class Proto(enum.IntEnum):
    ANY = 0
    ICMP = 1      # ICMP and ICMPv6 (58)
    TCP = 6
    UDP = 17


@dataclass(frozen=True, slots=True)
class Selector:
    """``from``/``to`` of a rule: any peer, the members of a group, or one peer."""

    group: str = ""
    peer: bytes = b""

    @property
    def any(self) -> bool:
        return not self.group and not self.peer

    def matches(self, peer: bytes, groups: tuple[str, ...] | frozenset[str]) -> bool:
        if self.peer:
            return peer == self.peer
        if self.group:
            return self.group in groups
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    src: Selector
    dst: Selector
    proto: Proto = Proto.ANY
    ports: tuple[int, int] | None = None
    """Inclusive destination port range (TCP/UDP only); None: any port."""

    def matches_flow(self, proto: int, dport: int | None) -> bool:
        """``dport`` None: a packet without ports (non-first fragment), which only any-port rules match."""
        if self.proto is not Proto.ANY:
            if self.proto is Proto.ICMP:
                if proto not in (1, 58):
                    return False
            elif proto != self.proto:
                return False
        if self.ports is None:
            return True
        return dport is not None and self.ports[0] <= dport <= self.ports[1]


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy whose bytes, signer and signature are good (the admin's certificate not yet checked at a time)."""

    network_id: str
    seq: int
    default: Action
    rules: tuple[Rule, ...]
    issuer: bytes
    admin: Certificate | None
    raw: bytes

    def rank(self) -> tuple[int, bytes]:
        """Higher wins (DHT select, pushes): the sequence number, then the bytes."""
        return (self.seq, self.raw)


def _rule_pb(rule: Rule) -> pb.Rule:
    first, last = rule.ports if rule.ports is not None else (0, 0)
    return pb.Rule(action=int(rule.action), from_group=rule.src.group, from_peer=rule.src.peer,
                   to_group=rule.dst.group, to_peer=rule.dst.peer, proto=int(rule.proto),
                   port_first=first, port_last=last)


def sign_policy(signer: Signer, network: str, seq: int, default: Action, rules: tuple[Rule, ...] | list[Rule]) -> bytes:
    """SignedPolicy bytes for ``rules`` (checked as a reader would: what we sign, every node takes)."""
    body = pb.Policy(network_id=network, seq=seq, default_action=int(default), issuer=signer.public_key,
                     rules=[_rule_pb(r) for r in rules])
    body_bytes = canonical.encode(body)
    signed = pb.SignedPolicy(policy=body_bytes, signature=signer.sign(POLICY_CONTEXT + body_bytes),
                             issuer_certificate=signer.issuer_certificate or b"")
    data = canonical.encode(signed)
    open_bytes(data, network)
    return data


def _selector(group: str, peer: bytes, which: str, index: int) -> Selector:
    if group and peer:
        raise PolicyError(f"policy: rule {index}: {which}_group and {which}_peer are both set")
    if group and not is_group(group):
        raise PolicyError(f"policy: rule {index}: {which}_group {group!r} is not a group name")
    if peer and public_key_of(peer) is None:
        raise PolicyError(f"policy: rule {index}: {which}_peer is not an Ed25519 peer ID")
    return Selector(group, peer)


def _rule(r: pb.Rule, index: int) -> Rule:
    try:
        action = Action(r.action)
    except ValueError:
        raise PolicyError(f"policy: rule {index}: action {r.action} is neither 1 (allow) nor 2 (deny)") from None
    try:
        proto = Proto(r.proto)
    except ValueError:
        raise PolicyError(f"policy: rule {index}: proto {r.proto} is not 0, 1, 6 or 17") from None
    ports: tuple[int, int] | None = None
    if r.port_first or r.port_last:
        if proto not in (Proto.TCP, Proto.UDP):
            raise PolicyError(f"policy: rule {index}: ports need proto tcp or udp")
        if not 1 <= r.port_first <= r.port_last <= 65535:
            raise PolicyError(f"policy: rule {index}: ports must satisfy 1 <= port_first <= port_last <= 65535")
        ports = (r.port_first, r.port_last)
    return Rule(action, _selector(r.from_group, r.from_peer, "from", index),
                _selector(r.to_group, r.to_peer, "to", index), proto, ports)


def open_bytes(data: bytes, expected_network: str) -> Policy:
    """Bytes, fields, signer and signature (no clock): §17.3 steps 1-6."""
    if len(data) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy is {len(data)} bytes, more than {MAX_POLICY_SIZE}")
    signed = canonical.parse(pb.SignedPolicy, data, "policy")
    body = canonical.parse(pb.Policy, signed.policy, "policy body")
    if not is_network_id(body.network_id) or body.network_id != expected_network:
        raise PolicyError(f"policy is for network {body.network_id!r}, not {expected_network}")
    if body.seq == 0:
        raise PolicyError("policy: seq must be at least 1")
    try:
        default = Action(body.default_action)
    except ValueError:
        raise PolicyError(f"policy: default_action {body.default_action} is neither 1 (allow) nor 2 (deny)") from None
    if len(body.rules) > MAX_RULES:
        raise PolicyError(f"policy: more than {MAX_RULES} rules")
    rules = tuple(_rule(r, i) for i, r in enumerate(body.rules))
    if len(body.issuer) != 32 or len(signed.signature) != 64:
        raise PolicyError("policy: issuer must be 32 bytes and signature 64 bytes")
    admin: Certificate | None = None
    if signed.issuer_certificate:
        try:
            admin = open_certificate(signed.issuer_certificate, expected_network, _depth=1)
        except MembershipError as exc:
            raise PolicyError(f"policy: signer's {exc}") from None
        if not admin.has_role(ROLE_ADMIN) or admin.peer_id != peer_id_bytes(body.issuer):
            raise PolicyError("policy: signer is not the admin of the attached certificate")
    elif network_id(body.issuer) != expected_network:
        raise PolicyError("policy: issuer is neither the network owner nor an admin")
    if not verify_signature(body.issuer, POLICY_CONTEXT, signed.policy, signed.signature):
        raise PolicyError("policy: bad signature")
    return Policy(body.network_id, body.seq, default, rules, body.issuer, admin, data)


def open_policy(data: bytes, expected_network: str, now: float, revoked: Mapping[bytes, int]) -> Policy:
    """The whole validation (§17.3): bytes and signature, then an admin signer's certificate at ``now``."""
    policy = open_bytes(data, expected_network)
    if policy.admin is not None:
        try:
            check(policy.admin, now, revoked)
        except MembershipError as exc:
            raise PolicyError(f"policy: signer's {exc}") from None
    return policy


def allow_all(network: str) -> Policy:
    """What a network without a signed policy does: every flow is allowed (seq 0, never on the wire)."""
    return Policy(network, 0, Action.ALLOW, (), b"", None, b"")
