"""nftables scripts rendered from the policy: order, matches, counters; checked by the kernel's nft too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from p2pvpn.addressing import network_v6_prefix
from p2pvpn.exit import nft
from p2pvpn.exit.policy import DEFAULT_ALLOW, DEFAULT_DENY, ExitPolicy

POLICY = ExitPolicy.build(("0.0.0.0/0:80,443,8000-8999", "[::/0]"),
                          ("10.0.0.0/8", "192.168.0.0/16", "[fc00::/7]", "203.0.113.20/32"), "default")


def rules_of(script: str, chain: str) -> list[str]:
    lines = script.splitlines()
    start = lines.index(f"  chain {chain} {{") + 1
    end = lines.index("  }", start)
    return [line.strip() for line in lines[start:end]]


def test_table_names_are_per_node_and_stable() -> None:
    a = nft.table_name("exit", b"\x00\x24peer-a")
    assert a == nft.table_name("exit", b"\x00\x24peer-a")
    assert a != nft.table_name("exit", b"\x00\x24peer-b")
    assert a.startswith("p2pvpn_exit_") and len(a) == len("p2pvpn_exit_") + 8
    assert nft.table_name("client", b"x").startswith("p2pvpn_client_")


def test_exit_table_replaces_itself_and_hooks_only_traffic_of_our_tun() -> None:
    script = nft.render_exit_table(nft.ExitTable("p2pvpn_exit_0123abcd", "p2pvpn0", POLICY))
    head = script.splitlines()[:3]
    assert head == ["table inet p2pvpn_exit_0123abcd {}", "delete table inet p2pvpn_exit_0123abcd",
                    "table inet p2pvpn_exit_0123abcd {"]
    forward = rules_of(script, "forward")
    assert forward == ["type filter hook forward priority filter; policy accept;",
                       'iifname "p2pvpn0" jump from_overlay', 'oifname "p2pvpn0" jump to_overlay']
    assert rules_of(script, "postrouting") == [
        "type nat hook postrouting priority srcnat; policy accept;",
        'iifname "p2pvpn0" oifname != "p2pvpn0" ip saddr 100.64.0.0/10 masquerade',
        f'iifname "p2pvpn0" oifname != "p2pvpn0" ip6 saddr {network_v6_prefix("default")} masquerade',
    ]
    for counter in nft.COUNTERS:
        assert f"  counter {counter} {{ }}" in script
    assert "set up4" not in script  # no rate limit configured


def test_input_chain_lets_the_overlay_reach_only_the_exit_hosts_overlay_addresses() -> None:
    script = nft.render_exit_table(nft.ExitTable("t", "tun0", POLICY))
    assert rules_of(script, "input") == ["type filter hook input priority filter; policy accept;",
                                         'iifname "tun0" jump to_host']
    assert rules_of(script, "to_host") == [
        "ip daddr 100.64.0.0/10 return",
        f"ip6 daddr {network_v6_prefix('default')} return",
        "counter name host_denied reject with icmpx admin-prohibited",
    ]


def test_policy_rules_come_in_verdict_order_overlay_deny_allow_then_refuse() -> None:
    rules = rules_of(nft.render_exit_table(nft.ExitTable("t", "tun0", POLICY)), "from_overlay")
    reject = "reject with icmpx admin-prohibited"
    assert rules[0] == f"ip daddr 100.64.0.0/10 counter name overlay {reject}"
    assert rules[1] == f"ip6 daddr {network_v6_prefix('default')} counter name overlay {reject}"
    denies = rules[2:2 + len(POLICY.deny_entries)]
    assert all(r.endswith(f"counter name denied {reject}") for r in denies)
    assert f"ip daddr 10.0.0.0/8 counter name denied {reject}" in denies
    assert f"ip6 daddr fc00::/7 counter name denied {reject}" in denies
    assert f"ip daddr 203.0.113.20/32 counter name denied {reject}" in denies
    allows = rules[2 + len(POLICY.deny_entries):-1]
    assert allows == [
        "meta nfproto ipv4 meta l4proto { tcp, udp } th dport { 80, 443, 8000-8999 } counter name forwarded accept",
        "meta nfproto ipv6 counter name forwarded accept",
    ]
    assert rules[-1] == f"counter name not_allowed {reject}"


def test_rate_limit_adds_per_client_sets_in_both_directions() -> None:
    script = nft.render_exit_table(nft.ExitTable("t", "tun0", POLICY, rate_limit_kbytes=1250))
    up = rules_of(script, "from_overlay")
    down = rules_of(script, "to_overlay")
    limit = "limit rate over 1250 kbytes/second"
    # Before the allow rules (so over-limit packets are dropped), after the refusals (so those are counted as such).
    first_allow = next(i for i, r in enumerate(up) if r.endswith("forwarded accept"))
    assert up[first_allow - 2] == f"update @up4 {{ ip saddr {limit} }} counter name rate_limited drop"
    assert up[first_allow - 1] == f"update @up6 {{ ip6 saddr {limit} }} counter name rate_limited drop"
    assert down == [f"update @down4 {{ ip daddr {limit} }} counter name rate_limited drop",
                    f"update @down6 {{ ip6 daddr {limit} }} counter name rate_limited drop", "counter name returned"]


def test_client_table_saves_and_restores_only_our_mark() -> None:
    script = nft.render_client_table("p2pvpn_client_0123abcd", 0x7032)
    assert rules_of(script, "premangle")[1:] == ["ct mark 0x7032 meta mark set ct mark"]
    assert rules_of(script, "postmangle")[1:] == ["meta mark 0x7032 ct mark set meta mark"]


def test_counters_and_tables_are_read_from_nft_json() -> None:
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"counter": {"family": "inet", "name": "denied", "table": "t", "handle": 3, "packets": 4, "bytes": 240}},
        {"counter": {"family": "inet", "name": "forwarded", "table": "t", "handle": 2, "packets": 0, "bytes": 0}},
    ]}  # fmt: skip
    assert nft.parse_counters(json.dumps(listing)) == {"denied": {"packets": 4, "bytes": 240},
                                                        "forwarded": {"packets": 0, "bytes": 0}}
    tables = {"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "a", "handle": 1}},
                           {"table": {"family": "ip", "name": "b", "handle": 2}}]}
    assert nft.parse_table_names(json.dumps(tables)) == ["a"]


@pytest.mark.netns
@pytest.mark.parametrize("rate", [0, 1250])
def test_the_kernel_accepts_both_scripts_and_loading_twice_replaces(rate: int) -> None:
    """``nft -f`` in a throwaway network namespace: the scripts are valid, and reloading one is idempotent."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare")
    exit_script = nft.render_exit_table(nft.ExitTable("p2pvpn_exit_0123abcd", "p2pvpn0", POLICY, rate))
    client_script = nft.render_client_table("p2pvpn_client_0123abcd", 0x7032)
    shell = ("nft -f /dev/stdin <<'A'\n" + exit_script + "A\n" + "nft -f /dev/stdin <<'A'\n" + exit_script + "A\n"
             + "nft -f /dev/stdin <<'A'\n" + client_script + "A\n" + "nft -j list ruleset\n")
    result = subprocess.run(["unshare", "-n", "sh", "-c", shell], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    tables = nft.parse_table_names(result.stdout)
    assert sorted(tables) == ["p2pvpn_client_0123abcd", "p2pvpn_exit_0123abcd"]
    counters = [i["counter"]["name"] for i in json.loads(result.stdout)["nftables"] if "counter" in i]
    assert sorted(counters) == sorted(nft.COUNTERS)


def test_default_policy_renders_within_the_published_limits() -> None:
    policy = ExitPolicy.build(DEFAULT_ALLOW, DEFAULT_DENY, "default")
    allow, deny = policy.summary()
    assert len(allow) <= 16 and len(deny) <= 16
