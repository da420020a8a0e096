"""Names, ping and netcheck end to end: real ``p2pvpn up`` members of an owned network in namespaces.

Topology (tests/e2e/test_membership_netns.py's flat lab)::

    owner 198.18.1.1 ── switch lan 198.18.1.0/24 ── m1 198.18.1.2, m2 198.18.1.3 (--no-udp)

m1 and m2 boot from the owner and find each other in the DHT. m2 runs
without the datagram path, so m1's tunnel to it carries everything on the
stream ("direct"), while m1 and the owner move their data to UDP.
Queries go from m1's namespace to m1's own responder, as a program on m1
(or systemd-resolved) would send them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from e2e.conftest import leftovers, next_prefix
from e2e.test_membership_netns import FAST, PORT, MemberLab, status, wait_tunnels
from p2pvpn.lab.demo import CLI_TIMEOUT, LabNode, p2pvpn_argv, wait_for

pytestmark = pytest.mark.netns

RESOLVE = """
import json, sys
import dns.message, dns.query, dns.rcode, dns.resolver
server, names = sys.argv[1], sys.argv[2:]
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [server]
resolver.lifetime = 5
out = {}
for name in names:
    try:
        out[name] = sorted(r.to_text() for t in ("A", "AAAA") for r in resolver.resolve(name, t))
    except dns.resolver.NXDOMAIN:
        out[name] = "NXDOMAIN"
    except dns.resolver.NoNameservers as exc:  # REFUSED from the only server
        out[name] = "REFUSED" if "REFUSED" in str(exc) else str(exc)
over_tcp = dns.query.tcp(dns.message.make_query(names[0], "A"), server, timeout=5)
out["tcp"] = sorted(r.to_text() for rrset in over_tcp.answer for r in rrset)
print(json.dumps(out))
"""


@pytest.fixture
def lab() -> Iterator[MemberLab]:
    made = MemberLab(next_prefix(), ["m1", "m2"])
    made.__enter__()
    try:
        for name in ("m1", "m2"):
            made.admit(name)
        yield made
    finally:
        for node in made.nodes.values():  # shown by pytest only when the test fails
            print(f"--- log of {node.name} ({made.prefix}) ---\n{node.log_tail(40)}")
        made.close()
        assert not leftovers(made.prefix), leftovers(made.prefix)


def in_ns(node: LabNode, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """A p2pvpn command run in ``node``'s namespace (as a user on that machine would type it)."""
    return node.host.run(*p2pvpn_argv(*args), check=False, timeout=timeout)


def data_path(node: LabNode, other: LabNode) -> str | None:
    view = next((p for p in status(node).get("peers", []) if p["peer_id"] == other.peer_id), None)
    return view.get("data_path") if view else None


def start(lab: MemberLab) -> tuple[LabNode, LabNode, LabNode]:
    owner, m1, m2 = lab["owner"], lab["m1"], lab["m2"]
    owner.start((), "--reachability", "public", *FAST)
    owner.host.wait_listening(PORT, timeout=120)  # a busy machine: interpreter starts take long
    m1.start((), "--bootstrap", owner.dial_addr, *FAST)
    m2.start((), "--bootstrap", owner.dial_addr, "--no-udp", *FAST)
    wait_tunnels([(m1, owner), (m1, m2), (m2, owner)], timeout=120)
    return owner, m1, m2


def test_names_resolve_ping_reports_the_path_and_netcheck_has_its_fields(lab: MemberLab) -> None:
    owner, m1, m2 = start(lab)

    # -- DNS: m1 joined with an offline certificate (no network label): names under the network ID, itself
    # included; the owner knows the label from `network create`: names under lab.internal too
    def resolve(node: LabNode, *names: str) -> dict[str, Any]:
        result = node.host.run(sys.executable, "-c", RESOLVE, node.ipv4, *names, check=False, timeout=CLI_TIMEOUT)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    zone = f"{lab.network_id}.internal"
    names = (f"m2.{zone}", f"OWNER.{zone}.", f"m1.{zone}", f"nobody.{zone}", "example.com")
    assert wait_for(lambda: resolve(m1, *names)[f"m2.{zone}"] != "NXDOMAIN", 20)
    answered = resolve(m1, *names)
    assert answered[f"m2.{zone}"] == sorted([m2.ipv4, m2.ipv6])
    assert answered[f"OWNER.{zone}."] == sorted([owner.ipv4, owner.ipv6])
    assert answered[f"m1.{zone}"] == sorted([m1.ipv4, m1.ipv6])
    assert answered[f"nobody.{zone}"] == "NXDOMAIN"
    assert answered["example.com"] == "REFUSED"
    assert answered["tcp"] == [m2.ipv4]
    by_label = resolve(owner, "m2.lab.internal", "m1.Lab.Internal", "nobody.lab.internal", f"m1.{zone}")
    assert by_label["m2.lab.internal"] == sorted([m2.ipv4, m2.ipv6])
    assert by_label["m1.Lab.Internal"] == by_label[f"m1.{zone}"] == sorted([m1.ipv4, m1.ipv6])
    assert by_label["nobody.lab.internal"] == "NXDOMAIN"
    dns_status = status(m1)["dns"]
    assert dns_status["zones"] == [zone]
    assert dns_status["counters"]["answered"] >= 6 and dns_status["counters"]["refused"] >= 1
    assert dns_status["resolved"]["installed"] is False  # no systemd-resolved for a namespace's link
    assert status(owner)["dns"]["zones"] == ["lab.internal", zone]

    # -- ping: the stream to m2 (no datagram path), UDP to the owner once its path is up
    pinged = in_ns(m1, "ping", "m2", "--count", "3", "--json", "--dir", str(m1.directory), timeout=CLI_TIMEOUT + 10)
    assert pinged.returncode == 0, pinged.stderr
    lines = [json.loads(line) for line in pinged.stdout.splitlines()]
    probes, summary = lines[:-1], lines[-1]["summary"]
    assert len(probes) == 3 and summary["sent"] == 3 and summary["received"] >= 2
    for probe in probes:
        assert probe["peer_id"] == m2.peer_id and probe["name"] == "m2" and probe["path"] == "direct"
        assert probe["relay"] is None
        if probe["reply"]:
            assert 0 < probe["rtt_ms"] < 2000

    assert wait_for(lambda: data_path(m1, owner) == "udp", 30), status(m1).get("peers")
    pinged = in_ns(m1, "ping", owner.ipv6, "--count", "2", "--dir", str(m1.directory), timeout=CLI_TIMEOUT + 10)
    assert pinged.returncode == 0, pinged.stderr
    assert "owner" in pinged.stdout and re.search(r"seq=1 datagram \(udp 198\.18\.1\.1:4242\) rtt=", pinged.stdout), pinged.stdout
    assert "2 sent, 2 received" in pinged.stdout or "2 sent, 1 received" in pinged.stdout, pinged.stdout

    unknown = in_ns(m1, "ping", "nobody", "--count", "1", "--dir", str(m1.directory))
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert len(unknown.stderr.strip().splitlines()) == 1 and "nobody" in unknown.stderr, unknown.stderr

    # -- netcheck: m1 on a flat LAN, no NAT, UDP through to the owner, no relay, no exit
    checked = in_ns(m1, "netcheck", "--json", "--dir", str(m1.directory), timeout=CLI_TIMEOUT + 10)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["reachability"] in ("public", "private", "unknown")
    assert report["nat_mapping"] in ("none", "unknown"), report  # peers see m1's own address, if any told it yet
    assert all(o["external"].startswith(m1.address + ":") for o in report["observed"]), report["observed"]
    assert report["relays"] == [] and report["exit"] is None
    udp = report["udp"]
    assert udp["enabled"] and udp["gets_through"] is True and udp["port"] == PORT
    rows = {r["peer_id"]: r for r in udp["peers"]}
    assert rows[owner.peer_id]["data_path"] == "udp" and rows[owner.peer_id]["name"] == "owner"
    assert rows[m2.peer_id]["udp_agreed"] is False and rows[m2.peer_id]["path"] == "direct"


def test_ping_without_a_running_node_is_one_line(lab: MemberLab) -> None:
    m1 = lab["m1"]
    result = in_ns(m1, "ping", "m2", "--dir", str(m1.directory))
    assert result.returncode != 0 and "no node is running" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ping_through_a_relay_names_the_relay_and_netcheck_lists_the_slot() -> None:
    """Behind NATs (the membership test's topology): a and b reach each other only through the owner's relay.

        owner 198.18.0.10 (relay) ── wan ──┬─ nat1 (eim) ── a
                                           └─ nat2 (random) ── b
    """
    lab = MemberLab(next_prefix(), ["a", "b"], nat=True)
    lab.__enter__()
    try:
        for name in ("a", "b"):
            lab.admit(name)
        owner, a, b = lab["owner"], lab["a"], lab["b"]
        owner.start((), "--relay", "--reachability", "public", *FAST)
        owner.host.wait_listening(PORT, timeout=120)
        for node in (a, b):  # no hole punching: the tunnel stays on the relay
            node.start((), "--bootstrap", owner.dial_addr, "--static-relay", owner.dial_addr, "--no-hole-punch", *FAST)
        wait_tunnels([(a, b), (b, a)], timeout=120)

        pinged = in_ns(a, "ping", "b", "--count", "2", "--dir", str(a.directory), timeout=CLI_TIMEOUT + 10)
        assert pinged.returncode == 0, pinged.stderr
        assert re.search(r"seq=1 relayed via owner rtt=[0-9.]+ ms", pinged.stdout), pinged.stdout
        assert "2 sent" in pinged.stdout

        checked = in_ns(a, "netcheck", "--json", "--dir", str(a.directory), timeout=CLI_TIMEOUT + 10)
        assert checked.returncode == 0, checked.stderr
        report = json.loads(checked.stdout)
        assert report["reachability"] in ("private", "unknown"), report["reachability_detail"]
        assert [(r["relay"], r["name"]) for r in report["relays"]] == [(owner.peer_id, "owner")], report["relays"]
        assert report["nat_mapping"] in ("endpoint-independent", "unknown"), report  # nat1 maps independently
        rows = {r["peer_id"]: r for r in report["udp"]["peers"]}
        assert rows[b.peer_id]["path"] == "relayed" and rows[b.peer_id]["udp_agreed"] is False
        human = in_ns(a, "netcheck", "--dir", str(a.directory), timeout=CLI_TIMEOUT + 10)
        assert human.returncode == 0 and re.search(r"relays reserved +owner\n", human.stdout), human.stdout
    finally:
        for node in lab.nodes.values():  # shown by pytest only when the test fails
            print(f"--- log of {node.name} ({lab.prefix}) ---\n{node.log_tail(40)}")
        lab.close()
        assert not leftovers(lab.prefix), leftovers(lab.prefix)
