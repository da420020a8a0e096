"""The namespace topology builder: real namespaces, veths, tc and nft.

Only the rate-limit test asserts on timing (an upper bound); everything else
checks state, so a busy machine cannot make these tests flaky.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterator

import pytest

from p2pvpn.lab.topology import Host, LabError, Topology, list_netns, parse_rate, require_netns

TOOLS = ("ping", "iperf3", "tc", "nft", "ss")


@functools.cache
def _netns_unusable() -> str | None:
    return require_netns(*TOOLS)


def _our_namespaces(prefix: str) -> list[str]:
    return [ns for ns in list_netns() if ns.startswith(f"{prefix}-")]


@pytest.fixture
def topo() -> Iterator[Topology]:
    reason = _netns_unusable()
    if reason is not None:
        pytest.skip(reason)
    with Topology() as t:
        yield t
    assert _our_namespaces(t.prefix) == []


def _ping(src: Host, dst: str, count: int = 2) -> subprocess.CompletedProcess[str]:
    return src.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", dst, check=False)


@pytest.mark.netns
def test_two_hosts_on_a_switch_ping_each_other(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    lan = topo.add_switch("lan", "198.18.1.0/24")
    addr_a = topo.attach(a, lan)
    addr_b = topo.attach(b, lan)
    assert (addr_a, addr_b) == ("198.18.1.1", "198.18.1.2")
    assert _ping(a, addr_b).returncode == 0
    assert _ping(b, addr_a).returncode == 0


@pytest.mark.netns
def test_a_routed_switch_joins_hosts_with_one_neighbour_each(topo: Topology) -> None:
    """Many hosts must not fill the kernel's shared neighbour table: each host's only neighbour is the switch."""
    hosts = [topo.add_host(n) for n in ("a", "b", "c")]
    lan = topo.add_switch("lan", "198.18.1.0/24", routed=True)
    addrs = [topo.attach(h, lan) for h in hosts]
    assert addrs == ["198.18.1.1", "198.18.1.2", "198.18.1.3"]  # .254 is the switch's own
    assert _ping(hosts[0], addrs[1]).returncode == 0
    assert _ping(hosts[0], addrs[2]).returncode == 0
    assert _ping(hosts[2], addrs[1]).returncode == 0
    neighbours = hosts[0].run("ip", "-4", "neigh", "show", "dev", "eth0").stdout.split()
    assert neighbours[:1] == ["198.18.1.254"] and "198.18.1.2" not in neighbours and "198.18.1.3" not in neighbours


@pytest.mark.netns
def test_attach_with_an_explicit_address(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    lan = topo.add_switch("lan", "198.18.1.0/24")
    assert topo.attach(a, lan, address="198.18.1.1") == "198.18.1.1"
    assert topo.attach(b, lan) == "198.18.1.2"  # the explicit one is not handed out twice
    with pytest.raises(ValueError, match="already used"):
        topo.attach(topo.add_host("c"), lan, address="198.18.1.2")


@pytest.mark.netns
def test_link_joins_two_hosts_point_to_point(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    addr_a, addr_b = topo.link(a, b, "198.18.0.0/24", iface_a="eth0", iface_b="eth0")
    assert (addr_a, addr_b) == ("198.18.0.1", "198.18.0.2")
    assert _ping(a, addr_b).returncode == 0
    assert a.address("eth0") == addr_a


@pytest.mark.netns
def test_veth_ends_are_born_inside_the_namespaces(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    topo.link(a, b, "198.18.0.0/30")
    root_links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    names = {link["ifname"] for link in json.loads(root_links.stdout)}
    assert "to-a" not in names and "to-b" not in names


@pytest.mark.netns
def test_shape_limits_the_rate(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    _, addr_b = topo.link(a, b, "198.18.0.0/24", iface_a="eth0", iface_b="eth0")
    a.shape("eth0", "200mbit")
    b.popen("iperf3", "-s", "-1", "-B", addr_b, "-p", "5201",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    b.wait_listening(5201)
    out = a.run("iperf3", "-c", addr_b, "-p", "5201", "-t", "2", "-J", timeout=30).stdout
    mbit_s = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 0 < mbit_s < 260


@pytest.mark.netns
def test_ingress_loss_drops_about_the_requested_share(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    _, addr_b = topo.link(a, b, "198.18.0.0/24", iface_a="eth0", iface_b="eth0")
    b.add_ingress_loss(50, iface="eth0")
    a.run("ping", "-q", "-f", "-c", "1000", "-W", "1", addr_b, check=False, timeout=60)
    seen, dropped = b.ingress_counters()
    assert seen >= 1000
    # Binomial(1000, 0.05): mean 50, sd 6.9; these bounds are > 4 sd wide.
    assert 20 <= dropped <= 85


@pytest.mark.netns
def test_ingress_loss_spares_other_interfaces(topo: Topology) -> None:
    a, b = topo.add_host("a"), topo.add_host("b")
    _, addr_b = topo.link(a, b, "198.18.0.0/24", iface_a="eth0", iface_b="eth0")
    b.add_ingress_loss(1000, iface="other0")
    assert _ping(a, addr_b).returncode == 0
    assert b.ingress_counters() == (0, 0)


@pytest.mark.netns
def test_close_removes_namespaces_and_stops_processes() -> None:
    reason = _netns_unusable()
    if reason is not None:
        pytest.skip(reason)
    with Topology() as topo:
        a, b = topo.add_host("a"), topo.add_host("b")
        topo.link(a, b, "198.18.0.0/24")
        sleeper = a.popen("sleep", "60")
        assert len(_our_namespaces(topo.prefix)) == 2
    assert sleeper.returncode is not None
    assert _our_namespaces(topo.prefix) == []
    topo.close()  # idempotent


@pytest.mark.netns
def test_close_cleans_up_after_an_exception_and_partial_setup() -> None:
    reason = _netns_unusable()
    if reason is not None:
        pytest.skip(reason)
    topo = Topology()
    with pytest.raises(LabError), topo:
        a = topo.add_host("a")
        topo.add_switch("lan", "198.18.1.0/24")
        a.run("ip", "link", "set", "nosuchif", "up")  # fails half-way through a setup
    assert _our_namespaces(topo.prefix) == []


def test_refuses_subnets_outside_the_lab_ranges() -> None:
    topo = Topology()  # nothing is created before the subnet is checked
    with pytest.raises(ValueError, match="outside the lab ranges"):
        topo.add_switch("lan", "10.0.0.0/24")
    with pytest.raises(ValueError, match="outside the lab ranges"):
        topo.link(None, None, "192.168.1.0/24")  # type: ignore[arg-type]


def test_names_are_validated_before_anything_is_created() -> None:
    topo = Topology(prefix="p2vtest")
    with pytest.raises(ValueError):
        topo.add_host("Not-A-Valid-Name")
    with pytest.raises(ValueError):
        Topology(prefix="has-dash")


def test_parse_rate() -> None:
    assert parse_rate("1gbit") == 1_000_000_000
    assert parse_rate("200mbit") == 200_000_000
    assert parse_rate("1.5mbit") == 1_500_000
    with pytest.raises(ValueError):
        parse_rate("fast")
