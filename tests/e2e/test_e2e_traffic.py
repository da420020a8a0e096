"""Traffic through real tunnels: ping, full-size packets, a 50 MiB TCP transfer, anti-spoofing."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import pytest

from p2pvpn.lab.demo import Lab, LabNode, p2pvpn_argv

from .transfer import hashed_transfer

pytestmark = pytest.mark.netns

TRANSFER_BYTES = 50 * 1024 * 1024
TRANSFER_PORT = 5001




def test_ping_both_ways_over_ipv4_and_ipv6(lab2: Lab) -> None:
    a, b = lab2.nodes
    for src, dst in ((a, b), (b, a)):
        for address in (dst.ipv4, dst.ipv6):
            result = src.ping(address)
            assert result.returncode == 0, f"{src.name} -> {address}: {result.stdout}{result.stderr}"
            assert " 0% packet loss" in result.stdout
    # The counters and the CLI's JSON contract agree with what just happened.
    ident = json.loads(_cli(a, "id").stdout)
    assert ident == {"peer_id": a.peer_id, "ipv4": a.ipv4, "ipv6": a.ipv6, "network": "default"}
    status = json.loads(_cli(a, "status").stdout)
    assert {"peer_id", "ipv4", "ipv6", "network", "drops", "peers"} <= status.keys()
    assert (status["peer_id"], status["ipv4"], status["ipv6"]) == (a.peer_id, a.ipv4, a.ipv6)
    (peer,) = json.loads(_cli(a, "peers").stdout)["peers"]
    assert (peer["peer_id"], peer["ipv4"], peer["ipv6"], peer["state"]) == (b.peer_id, b.ipv4, b.ipv6, "up")
    assert peer["transport"] == "tcp" and peer["path"] == "direct"
    assert peer["packets_out"] >= 6 and peer["packets_in"] >= 6  # 3 requests + 3 replies per family
    assert peer["drops"].get("spoofed_source", 0) == 0


def test_full_mtu_packets_pass_and_bigger_ones_are_refused(lab2: Lab) -> None:
    a, b = lab2.nodes
    mtu = a.status()["mtu"]
    for src, dst in ((a, b), (b, a)):
        # IPv4 header 20 + ICMP 8 = 28; IPv6 header 40 + ICMPv6 8 = 48: these fill the MTU exactly.
        r4 = src.ping(dst.ipv4, "-M", "do", "-s", str(mtu - 28))
        r6 = src.ping(dst.ipv6, "-M", "do", "-s", str(mtu - 48))
        assert r4.returncode == 0, r4.stdout + r4.stderr
        assert r6.returncode == 0, r6.stdout + r6.stderr
    delivered = _peer(b, a)["packets_in"]
    # One byte more with DF set: refused by the sender's kernel, reported, never delivered.
    r4 = a.ping(b.ipv4, "-M", "do", "-s", str(mtu - 27))
    r6 = a.ping(b.ipv6, "-M", "do", "-s", str(mtu - 47))
    for r in (r4, r6):
        assert r.returncode != 0
        assert "too long" in (r.stdout + r.stderr).lower()
    assert _peer(b, a)["packets_in"] == delivered


def test_a_packet_over_the_peers_mtu_is_dropped_counted_and_answered_with_icmp(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab = make_lab(2, mtus=[1500, 1400])
    a, b = lab.nodes
    assert a.ping(b.ipv4, "-M", "do", "-s", str(1400 - 28)).returncode == 0  # the smaller MTU is the limit
    # Without DF a bigger IPv4 packet is fragmented on the way (RFC 791), before any PMTU is learnt:
    # a's kernel sends 1500 bytes into its TUN, a's egress cuts them to b's 1400, b's kernel reassembles.
    before = _peer(b, a)["packets_in"]
    assert a.ping(b.ipv4, "-M", "dont", "-s", str(1500 - 28), count=1).returncode == 0
    assert _peer(b, a)["packets_in"] >= before + 2  # one echo request, two fragments
    assert "too_big" not in _peer(a, b)["drops"]
    delivered = _peer(b, a)["packets_in"]
    r4 = a.ping(b.ipv4, "-M", "do", "-s", str(1500 - 28))
    r6 = a.ping(b.ipv6, "-M", "do", "-s", str(1500 - 48))
    assert r4.returncode != 0 and r6.returncode != 0
    assert _peer(a, b)["drops"].get("too_big", 0) >= 2  # counted at the sender, not silently lost
    assert _peer(b, a)["packets_in"] == delivered
    # ... and answered like a router would: ICMP "fragmentation needed" / "packet too big" with
    # b's MTU, so a's kernel learns the path MTU (later pings fail locally, no black hole).
    assert a.status()["icmp_sent"].get("too_big", 0) >= 2
    for out in (r4.stdout + r4.stderr, r6.stdout + r6.stderr):
        assert "mtu = 1400" in out or "mtu=1400" in out, out
    for family, dest in (("-4", b.ipv4), ("-6", b.ipv6)):
        route = a.host.run("ip", family, "route", "get", dest, capture_output=True, text=True).stdout
        assert "mtu 1400" in route, route  # the PMTU exception the kernel keeps for b


def test_tcp_transfer_of_50_mib_arrives_intact(lab2: Lab) -> None:
    a, b = lab2.nodes
    seconds = hashed_transfer(a, b, b.ipv4, TRANSFER_PORT, TRANSFER_BYTES, 20251128)
    print(f"{TRANSFER_BYTES / 2**20:.0f} MiB in {seconds:.1f} s ({TRANSFER_BYTES * 8 / seconds / 1e6:.0f} Mbit/s)")
    assert _peer(b, a)["bytes_in"] >= TRANSFER_BYTES


def test_a_forged_source_address_is_dropped_counted_and_not_delivered(lab2: Lab) -> None:
    a, b = lab2.nodes
    forged4 = _unused(ipaddress.IPv4Network("100.64.0.0/10"), a, b)
    forged6 = _unused(ipaddress.IPv6Network(f"{a.ipv6}/64", strict=False), a, b)
    table = f"{lab2.prefix}_watch"
    # Count, at B, what B's node writes into B's TUN, by source address.
    b.host.run("nft", "-f", "-", input=(
        f"table inet {table} {{\n"
        f"  counter genuine {{}}\n  counter forged4 {{}}\n  counter forged6 {{}}\n"
        f"  chain pre {{\n"
        f"    type filter hook prerouting priority -300; policy accept;\n"
        f'    iifname "{b.tun}" ip saddr {a.ipv4} counter name "genuine"\n'
        f'    iifname "{b.tun}" ip saddr {forged4} counter name "forged4"\n'
        f'    iifname "{b.tun}" ip6 saddr {forged6} counter name "forged6"\n'
        f"  }}\n}}\n"
    ))  # fmt: skip
    assert a.ping(b.ipv4).returncode == 0
    # A's kernel now owns two addresses that are not A's overlay addresses; pings
    # bound to them go into A's TUN with a forged source, and A's node forwards them.
    a.host.run("ip", "addr", "add", f"{forged4}/32", "dev", a.tun)
    a.host.run("ip", "-6", "addr", "add", f"{forged6}/128", "dev", a.tun, "nodad")
    spoofed_before = _peer(b, a)["drops"].get("spoofed_source", 0)
    r4 = a.ping(b.ipv4, "-I", str(forged4))
    r6 = a.ping(b.ipv6, "-I", str(forged6))
    assert r4.returncode != 0 and r6.returncode != 0, "a forged packet got an answer"
    assert _peer(b, a)["drops"].get("spoofed_source", 0) - spoofed_before >= 6
    counters = _nft_counters(b, table)
    assert counters["genuine"] > 0  # the watch works...
    assert counters["forged4"] == counters["forged6"] == 0  # ...and saw no forged packet
    assert a.ping(b.ipv4).returncode == 0  # genuine traffic still flows


# -- helpers ------------------------------------------------------------------


def _cli(node: LabNode, command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        p2pvpn_argv(command, "--dir", str(node.directory), "--json"),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def _peer(node: LabNode, other: LabNode) -> dict:  # type: ignore[type-arg]
    for _ in range(3):  # the control socket may be briefly busy under load
        peer = node.peer_status(other)
        if peer is not None:
            return peer
        time.sleep(0.5)
    raise AssertionError(f"{node.name} does not know {other.name}")


def _unused(net: ipaddress.IPv4Network | ipaddress.IPv6Network, *nodes: LabNode) -> str:
    taken = {n.ipv4 for n in nodes} | {n.ipv6 for n in nodes}
    for offset in range(0x77, 0x77 + 16):
        candidate = str(net.network_address + offset)
        if candidate not in taken:
            return candidate
    raise AssertionError("no unused address")


def _nft_counters(node: LabNode, table: str) -> dict[str, int]:
    out = node.host.run("nft", "-j", "list", "table", "inet", table).stdout
    return {
        item["counter"]["name"]: int(item["counter"]["packets"])
        for item in json.loads(out)["nftables"]
        if "counter" in item
    }
