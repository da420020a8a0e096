"""The receiving node's stateful check of the network policy, sans-IO (docs/protocol.md §17.5).

Theory of operation, for a packet a peer sent us (``inbound``):

1. No policy, or one that allows everything (default allow, no rules):
   ``active`` is False and the data path does not call us at all.
2. A packet of a flow we track passes: a reply to a flow we opened, or a
   packet of a flow the peer opened and the policy allowed. A flow the peer
   opened under an older policy is decided again under the new one first
   (Nebula's behaviour): one the new policy denies is cut (``policy_changed``).
3. An ICMP error that quotes a packet of a tracked flow passes (related).
4. Anything else is a new flow: the first rule that matches the sending
   peer (its ID, the groups of the certificate it presented), this node
   (``to``), the protocol and the destination port decides; no match, the
   default. Allowed: the flow is tracked from now on. Denied: dropped,
   counted by reason (``rule``, ``default``).

Every packet we send (``outbound``) opens or refreshes its flow, so replies
to it pass even under a default of deny.

The common case (an IPv4 TCP or UDP packet without options or fragment
offset, of an established flow admitted under the current policy, carrying
no FIN/RST/SYN) takes a fast path: its conntrack key is sliced out of the
packet and only the expiry moves (``_fast``); everything else goes through
``parse`` and the full ladder. bench/policy_ingress.py measures both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from p2pvpn.policy.conntrack import ConnTrack, Key, State, Timeouts, make_key
from p2pvpn.policy.flow import ECHO_REQUEST, ICMP, ICMPV6, TCP, UDP, parse
from p2pvpn.policy.model import Action, Policy, Rule

GroupsOf = Callable[[bytes], tuple[str, ...]]


class Firewall:
    def __init__(self, policy: Policy, local_peer: bytes, local_groups: tuple[str, ...], groups_of: GroupsOf,
                 max_flows: int = 65536, timeouts: Timeouts = Timeouts()) -> None:
        self.local_peer = local_peer
        self.local_groups = local_groups
        self.groups_of = groups_of
        self.conntrack = ConnTrack(max_flows, timeouts)
        self.denied: Counter[str] = Counter()
        self.policy = policy
        self.rules: tuple[Rule, ...] = ()
        self.active = False
        self.set_policy(policy)
        self._flows = self.conntrack.flows
        self._tcp_established = timeouts.tcp_established
        self._udp = timeouts.udp

    def set_policy(self, policy: Policy) -> None:
        """A new policy: new flows follow it at once; flows peers opened are re-decided on their next packet."""
        self.policy = policy
        self.seq = policy.seq
        self.rules = tuple(r for r in policy.rules if r.dst.matches(self.local_peer, self.local_groups))
        self.active = bool(self.rules) or policy.default is Action.DENY

    def set_local_groups(self, groups: tuple[str, ...]) -> None:
        self.local_groups = groups
        self.set_policy(self.policy)

    def decide(self, peer: bytes, proto: int, dport: int | None) -> tuple[bool, str]:
        """Whether ``peer`` may open a flow to us with ``proto``/``dport``, and the reason when not."""
        groups = self.groups_of(peer)
        for rule in self.rules:
            if rule.src.matches(peer, groups) and rule.matches_flow(proto, dport):
                return rule.action is Action.ALLOW, "rule"
        return self.policy.default is Action.ALLOW, "default"

    def _fast(self, packet: bytes, offset: int, now: float) -> bool:
        """The steady state of an established IPv4 TCP/UDP flow: True when done (the packet passes)."""
        if packet[offset] != 0x45 or len(packet) < offset + 34 or packet[offset + 6] & 0x1F or packet[offset + 7]:
            return False
        proto = packet[offset + 9]
        if proto == TCP:
            if packet[offset + 33] & 0x07:  # FIN, SYN, RST: state changes go the long way
                return False
            timeout = self._tcp_established
        elif proto == UDP:
            timeout = self._udp
        else:
            return False
        flows, seq = self._flows, self.seq
        own = packet[offset + 9:offset + 10] + packet[offset + 12:offset + 24]  # the packet's own direction
        entry = flows.get(own)
        if entry is None:
            entry = flows.get(packet[offset + 9:offset + 10] + packet[offset + 16:offset + 20]
                              + packet[offset + 12:offset + 16] + packet[offset + 22:offset + 24]
                              + packet[offset + 20:offset + 22])
            if entry is None:
                return False
        if entry.expires <= now or entry.seq != seq or (proto == TCP and entry.state is not State.ESTABLISHED):
            return False
        entry.expires = now + timeout
        return True

    def inbound(self, peer: bytes, packet: bytes, offset: int, now: float) -> str | None:
        """None: deliver the packet; else the reason it is denied (also counted in ``denied``)."""
        if self._fast(packet, offset, now):
            return None
        flow = parse(packet, offset)
        if flow is None:
            return self._deny("malformed")
        track = self.conntrack
        if flow.sport is not None:
            key = make_key(flow.proto, flow.src, flow.sport, flow.dst, flow.dport)  # type: ignore[arg-type]
            entry = track.get(key, now)
            if entry is not None:  # the peer opened this flow
                if entry.seq != self.seq:
                    if entry.peer is not None and not self.decide(entry.peer, flow.proto, flow.dport)[0]:
                        track.remove(key)
                        return self._deny("policy_changed")
                    entry.seq = self.seq
                track.seen(key, entry, flow.flags, True, now)
                return None
            reverse = make_key(flow.proto, flow.dst, flow.dport, flow.src, flow.sport)  # type: ignore[arg-type]
            entry = track.get(reverse, now)
            if entry is not None:  # a reply to a flow we opened (or to a peer's flow we answered)
                if entry.seq != self.seq:
                    if entry.peer is not None and not self.decide(entry.peer, flow.proto, flow.sport)[0]:
                        track.remove(reverse)
                        return self._deny("policy_changed")
                    entry.seq = self.seq
                track.seen(reverse, entry, flow.flags, False, now)
                return None
            inner = flow.inner
            if inner is not None and inner.sport is not None:  # an ICMP error about a tracked flow
                quoted = make_key(inner.proto, inner.src, inner.sport, inner.dst, inner.dport)  # type: ignore[arg-type]
                back = make_key(inner.proto, inner.dst, inner.dport, inner.src, inner.sport)  # type: ignore[arg-type]
                if track.get(quoted, now) is not None or track.get(back, now) is not None:
                    return None
        allowed, reason = self.decide(peer, flow.proto, flow.dport)
        if not allowed:
            return self._deny(reason)
        if flow.sport is not None and flow.inner is None and (flow.proto not in (ICMP, ICMPV6)
                                                              or flow.flags & ECHO_REQUEST):
            track.open(key, flow.flags, peer, self.seq, now)
        return None

    def outbound(self, packet: bytes, offset: int, now: float) -> None:
        """A packet we send: refresh its flow, or open one (so its replies pass)."""
        if self._fast(packet, offset, now):
            return
        flow = parse(packet, offset)
        if flow is None or flow.sport is None or flow.inner is not None:
            return
        track = self.conntrack
        reverse = make_key(flow.proto, flow.dst, flow.dport, flow.src, flow.sport)  # type: ignore[arg-type]
        entry = track.get(reverse, now)
        if entry is not None:  # our answer in a flow the peer opened
            track.seen(reverse, entry, flow.flags, False, now)
            return
        key: Key = make_key(flow.proto, flow.src, flow.sport, flow.dst, flow.dport)  # type: ignore[arg-type]
        entry = track.get(key, now)
        if entry is not None:
            if entry.peer is None:
                entry.seq = self.seq  # our own flows are never re-decided
            track.seen(key, entry, flow.flags, True, now)
        elif flow.proto not in (ICMP, ICMPV6) or flow.flags & ECHO_REQUEST:
            track.open(key, flow.flags, None, self.seq, now)

    def sweep(self, now: float) -> int:
        return self.conntrack.sweep(now)

    def _deny(self, reason: str) -> str:
        self.denied[reason] += 1
        return reason

    def status(self) -> dict[str, object]:
        p = self.policy
        return {
            "seq": p.seq, "default": p.default.name.lower(), "rules": len(p.rules), "rules_here": len(self.rules),
            "active": self.active, "denied": sum(self.denied.values()), "denied_by_reason": dict(self.denied),
            "flows": len(self.conntrack), "max_flows": self.conntrack.max_entries,
            "conntrack": dict(self.conntrack.counters),
        }
