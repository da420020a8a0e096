"""AutoNAT's pure parts: where a server may dial back, and how answers become a status."""

from __future__ import annotations

import multiaddr

from p2pvpn.nat.reachability import MAX_DIALBACKS, Reachability, Verdicts, dialback_targets


def raw(text: str) -> bytes:
    return multiaddr.Multiaddr(text).to_bytes()


def test_dial_backs_go_only_to_the_observed_ip_on_the_advertised_ports() -> None:
    asked = [raw("/ip4/10.0.0.2/tcp/4242"), raw("/ip4/192.0.2.99/tcp/4243"), raw("/ip4/10.0.0.2/tcp/4242")]
    targets = dialback_targets("198.18.0.1", asked)
    assert [str(t) for t in targets] == ["/ip4/198.18.0.1/tcp/4242", "/ip4/198.18.0.1/tcp/4243"]


def test_no_dial_back_for_relayed_or_non_tcp_addresses_or_a_bad_ip() -> None:
    relay = raw("/ip4/198.18.0.10/tcp/4242/p2p/12D3KooWGpanFDaS8ELZwauZyb6a9NGERvQQxbgckzJ49CeAb4Ez/p2p-circuit")
    assert dialback_targets("198.18.0.1", [relay, raw("/ip4/1.2.3.4/udp/4242/quic-v1"), b"junk"]) == []
    assert dialback_targets("not-an-ip", [raw("/ip4/1.2.3.4/tcp/1")]) == []
    v6 = dialback_targets("2001:db8::1", [raw("/ip6/2001:db8::5/tcp/7")])
    assert [str(t) for t in v6] == ["/ip6/2001:db8::1/tcp/7"]


def test_dial_backs_are_bounded() -> None:
    many = [raw(f"/ip4/10.0.0.2/tcp/{port}") for port in range(1000, 1100)]
    assert len(dialback_targets("198.18.0.1", many)) == MAX_DIALBACKS


def test_verdicts_follow_the_majority_of_recent_answers_and_ties_keep_the_status() -> None:
    v = Verdicts(window=4)
    assert v.status == Reachability.UNKNOWN
    assert v.add(False) == Reachability.PRIVATE
    assert v.add(True) == Reachability.PRIVATE  # 1:1, unchanged
    assert v.add(True) == Reachability.PUBLIC
    for _ in range(3):
        v.add(False)
    assert v.status == Reachability.PRIVATE  # the old successes left the window
