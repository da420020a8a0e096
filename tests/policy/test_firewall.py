"""The firewall's decisions and its connection tracking, sans-IO (docs/protocol.md §17.5)."""

from __future__ import annotations

import pytest

from p2pvpn.policy.conntrack import ConnTrack, State, Timeouts, make_key
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import Action, Policy, Proto, Rule, Selector, allow_all
from policy.packets import ACK, FIN, RST, SYN, fragment, icmp, tcp, udp

NID = "tgegoektrvlu43fcqzq352hc4a5usevm"
ME, A, B = b"\x00me".ljust(38, b"m"), b"\x00a".ljust(38, b"a"), b"\x00b".ljust(38, b"b")
US, THEM = "100.64.0.2", "100.64.0.1"
GROUPS = {A: ("A",), B: ("B", "ops")}


def policy(default: Action, *rules: Rule, seq: int = 1) -> Policy:
    return Policy(NID, seq, default, tuple(rules), b"\x00" * 32, None, bytes([seq]))


def deny_ssh_a_to_b(seq: int = 1) -> Policy:
    return policy(Action.ALLOW, Rule(Action.DENY, Selector(group="A"), Selector(group="B"), Proto.TCP, (22, 22)),
                  seq=seq)


def firewall(p: Policy, my_groups: tuple[str, ...] = ("B",), **kw: object) -> Firewall:
    return Firewall(p, ME, my_groups, lambda peer: GROUPS.get(peer, ()), **kw)  # type: ignore[arg-type]


def test_allow_all_is_inactive_so_the_data_path_skips_it() -> None:
    assert not firewall(allow_all(NID)).active
    assert firewall(policy(Action.DENY)).active
    assert firewall(deny_ssh_a_to_b()).active
    assert not firewall(deny_ssh_a_to_b(), my_groups=("C",)).active  # no rule is about this node


def test_deny_rule_denies_new_tcp_flows_from_the_group_only_to_that_port() -> None:
    fw = firewall(deny_ssh_a_to_b())
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, SYN), 0, 0.0) == "rule"
    assert fw.inbound(A, tcp(THEM, US, 40001, 80, SYN), 0, 0.0) is None
    assert fw.inbound(B, tcp(THEM, US, 40002, 22, SYN), 0, 0.0) is None  # B is not in group A
    assert fw.inbound(A, udp(THEM, US, 40003, 22), 0, 0.0) is None       # udp, not tcp
    assert fw.denied == {"rule": 1}


def test_rules_for_other_nodes_do_not_apply_here() -> None:
    fw = firewall(deny_ssh_a_to_b(), my_groups=("A",))
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, SYN), 0, 0.0) is None


def test_first_match_wins_then_the_default() -> None:
    p = policy(Action.DENY,
               Rule(Action.DENY, Selector(peer=A), Selector(), Proto.TCP, (80, 80)),
               Rule(Action.ALLOW, Selector(), Selector(group="B"), Proto.TCP, (1, 1024)))
    fw = firewall(p)
    assert fw.inbound(A, tcp(THEM, US, 1, 80, SYN), 0, 0.0) == "rule"
    assert fw.inbound(A, tcp(THEM, US, 2, 81, SYN), 0, 0.0) is None
    assert fw.inbound(A, tcp(THEM, US, 3, 2000, SYN), 0, 0.0) == "default"
    assert fw.inbound(B, udp(THEM, US, 4, 53), 0, 0.0) == "default"


def test_replies_to_our_flows_pass_under_default_deny() -> None:
    fw = firewall(policy(Action.DENY))
    fw.outbound(tcp(US, THEM, 50000, 22, SYN), 0, 0.0)
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, SYN | ACK), 0, 0.1) is None
    assert fw.inbound(A, tcp(THEM, US, 22, 50001, SYN | ACK), 0, 0.1) == "default"  # another port: no flow
    fw.outbound(udp(US, THEM, 5353, 53), 0, 0.0)
    assert fw.inbound(A, udp(THEM, US, 53, 5353), 0, 0.1) is None
    fw.outbound(icmp(US, THEM, 8, ident=9), 0, 0.0)
    assert fw.inbound(A, icmp(THEM, US, 0, ident=9), 0, 0.1) is None
    assert fw.inbound(A, icmp(THEM, US, 0, ident=10), 0, 0.1) == "default"
    assert fw.inbound(A, icmp(THEM, US, 8, ident=9), 0, 0.1) == "default"  # their own ping: a new flow


def test_icmpv6_echo_and_ipv6_tcp() -> None:
    fw = firewall(policy(Action.DENY))
    me6, them6 = "fd00::2", "fd00::1"
    fw.outbound(icmp(me6, them6, 128, ident=3), 0, 0.0)
    assert fw.inbound(A, icmp(them6, me6, 129, ident=3), 0, 0.1) is None
    fw.outbound(tcp(me6, them6, 40000, 443, SYN), 0, 0.0)
    assert fw.inbound(A, tcp(them6, me6, 443, 40000, SYN | ACK), 0, 0.1) is None
    assert fw.inbound(A, tcp(them6, me6, 443, 40001, SYN | ACK), 0, 0.1) == "default"


def test_an_icmp_error_about_a_tracked_flow_is_related() -> None:
    fw = firewall(policy(Action.DENY))
    sent = tcp(US, THEM, 40000, 443, SYN)
    fw.outbound(sent, 0, 0.0)
    assert fw.inbound(A, icmp(THEM, US, 3, quoted=sent[:28]), 0, 0.1) is None  # unreachable, quoting our SYN
    other = tcp(US, THEM, 40001, 443, SYN)
    assert fw.inbound(A, icmp(THEM, US, 3, quoted=other[:28]), 0, 0.1) == "default"


def test_allowed_inbound_flows_are_tracked_and_our_answers_keep_them() -> None:
    p = policy(Action.DENY, Rule(Action.ALLOW, Selector(group="A"), Selector(), Proto.TCP, (22, 22)))
    fw = firewall(p)
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, SYN), 0, 0.0) is None
    fw.outbound(tcp(US, THEM, 22, 40000, SYN | ACK), 0, 0.0)
    entry = fw.conntrack.flows[make_key(6, bytes([100, 64, 0, 1]), 40000, bytes([100, 64, 0, 2]), 22)]
    assert entry.state is State.ESTABLISHED and entry.peer == A
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, ACK), 0, 1.0) is None


def test_a_new_policy_cuts_flows_it_no_longer_allows_but_not_ours() -> None:
    fw = firewall(policy(Action.ALLOW, seq=1))
    fw.set_policy(policy(Action.ALLOW, Rule(Action.ALLOW, Selector(), Selector(), Proto.TCP, (80, 80)), seq=2))
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, SYN), 0, 0.0) is None
    assert fw.inbound(A, tcp(THEM, US, 40001, 80, SYN), 0, 0.0) is None
    fw.outbound(tcp(US, THEM, 50000, 22, SYN), 0, 0.0)
    fw.set_policy(policy(Action.DENY, Rule(Action.ALLOW, Selector(), Selector(), Proto.TCP, (80, 80)), seq=3))
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, ACK), 0, 1.0) == "policy_changed"
    assert fw.inbound(A, tcp(THEM, US, 40000, 22, ACK), 0, 1.0) == "default"  # the flow is gone
    assert fw.inbound(A, tcp(THEM, US, 40001, 80, ACK), 0, 1.0) is None       # still allowed
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, ACK), 0, 1.0) is None        # our own flow stays


def test_flows_expire_by_state() -> None:
    t = Timeouts(tcp_handshake=5, tcp_established=100, tcp_closing=2, udp=10, icmp=3)
    fw = firewall(policy(Action.DENY), timeouts=t)
    fw.outbound(tcp(US, THEM, 50000, 22, SYN), 0, 0.0)
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, SYN | ACK), 0, 4.0) is None  # answered: established now
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, ACK), 0, 90.0) is None
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, FIN | ACK), 0, 91.0) is None  # closing: 2 s left
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, ACK), 0, 94.0) == "default"
    fw.outbound(tcp(US, THEM, 50001, 22, SYN), 0, 0.0)                          # never answered
    assert fw.inbound(A, tcp(THEM, US, 22, 50001, SYN | ACK), 0, 5.5) == "default"
    fw.outbound(udp(US, THEM, 1, 2), 0, 0.0)
    assert fw.inbound(A, udp(THEM, US, 2, 1), 0, 9.0) is None
    assert fw.inbound(A, udp(THEM, US, 2, 1), 0, 18.9) is None  # refreshed at 9.0
    assert fw.inbound(A, udp(THEM, US, 2, 1), 0, 29.0) == "default"
    assert fw.conntrack.counters["expired"] >= 3


def test_rst_closes_quickly() -> None:
    fw = firewall(policy(Action.DENY), timeouts=Timeouts(tcp_closing=1))
    fw.outbound(tcp(US, THEM, 50000, 22, SYN), 0, 0.0)
    fw.outbound(tcp(US, THEM, 50000, 22, RST), 0, 0.5)
    assert fw.inbound(A, tcp(THEM, US, 22, 50000, ACK), 0, 1.6) == "default"


def test_table_is_bounded_and_evictions_are_counted() -> None:
    fw = firewall(policy(Action.DENY), max_flows=4)
    for port in range(10):
        fw.outbound(udp(US, THEM, 1000 + port, 53), 0, 0.0)
    assert len(fw.conntrack) == 4
    assert fw.conntrack.counters["evicted"] == 6
    assert fw.inbound(A, udp(THEM, US, 53, 1000), 0, 0.1) == "default"   # evicted: the oldest went
    assert fw.inbound(A, udp(THEM, US, 53, 1009), 0, 0.1) is None


def test_sweep_drops_expired_flows() -> None:
    track = ConnTrack(timeouts=Timeouts(udp=1))
    for port in range(5):
        track.open(make_key(17, b"a", port, b"b", 53), 0, None, 0, now=float(port))
    assert track.sweep(now=3.5) == 3 and len(track) == 2


def test_non_first_fragments_match_only_any_port_rules() -> None:
    fw = firewall(policy(Action.DENY, Rule(Action.ALLOW, Selector(), Selector(), Proto.UDP, (53, 53))))
    assert fw.inbound(A, fragment(udp(THEM, US, 1, 53), 10), 0, 0.0) == "default"
    fw = firewall(policy(Action.DENY, Rule(Action.ALLOW, Selector(), Selector(), Proto.UDP, None)))
    assert fw.inbound(A, fragment(udp(THEM, US, 1, 53), 10), 0, 0.0) is None


def test_truncated_packets_are_denied_as_malformed() -> None:
    fw = firewall(policy(Action.DENY))
    assert fw.inbound(A, tcp(THEM, US, 1, 22)[:30], 0, 0.0) == "malformed"
    assert fw.denied["malformed"] == 1


def test_offset_skips_a_virtio_header() -> None:
    fw = firewall(deny_ssh_a_to_b())
    assert fw.inbound(A, bytes(10) + tcp(THEM, US, 1, 22, SYN), 10, 0.0) == "rule"


@pytest.mark.parametrize("proto,port,expected", [(6, 22, True), (6, 23, False), (17, 22, False), (1, None, False)])
def test_rule_matching(proto: int, port: int | None, expected: bool) -> None:
    assert Rule(Action.DENY, Selector(), Selector(), Proto.TCP, (20, 22)).matches_flow(proto, port) is expected


def test_icmp_rules_cover_icmpv6() -> None:
    rule = Rule(Action.ALLOW, Selector(), Selector(), Proto.ICMP)
    assert rule.matches_flow(1, 0) and rule.matches_flow(58, 0) and not rule.matches_flow(6, 22)
