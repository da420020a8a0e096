"""The exit role end to end: real nodes in namespaces, a web server on a simulated internet.

Topology: p2pvpn.lab.exitlab (client, exit1, exit2 and a relay on the
underlay switch 198.18.1.0/24; the exits and the web server 203.0.113.10
and 2001:db8::10 on the "internet" switch 203.0.113.0/24 + 2001:db8::/64;
the client's own default route leads nowhere). The numbers printed here (``-s``) are the ones in
docs/performance.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from p2pvpn.lab.demo import Lab, LabNode, p2pvpn_argv, wait_for
from p2pvpn.lab.exitlab import (
    BIG_FILE, WWW6_IP, WWW_IP, WWW_IP_DENIED, WWW_PORT, ExitLab, counters, dump, snapshot,
)  # fmt: skip
from p2pvpn.lab.natlab import AS_NOBODY, NOBODY

pytestmark = pytest.mark.netns

FAST = ("--discovery-interval", "1", "--record-ttl", "30", "--keepalive", "1")
UP_WITHIN = 60.0         # seconds from start until the client's first request through an exit
FAILOVER_WITHIN = 10.0   # seconds from killing the exit in use until new connections work again
HELLO = f"http://{WWW_IP}:{WWW_PORT}/hello.txt"
HELLO6 = f"http://[{WWW6_IP}]:{WWW_PORT}/hello.txt"
# The lab's underlay is 198.18.0.0/15, which the default policy lets out (it is not private);
# the exits' policy here refuses it, and the second web server address.
POLICY = ("--exit-deny", "198.18.0.0/15", "--exit-deny", f"{WWW_IP_DENIED}/32", "--exit-deny", "100.64.0.0/10",
          "--exit-deny", "[fc00::/7]", "--exit-deny", "0.0.0.0/0:25")


@pytest.fixture
def exit_lab(lab_prefix: Callable[[], str]) -> Iterator[ExitLab]:
    if shutil.which("curl") is None:
        pytest.skip("`curl` is not installed")  # on CI, tests/conftest.py turns this into a failure
    lab = ExitLab(prefix=lab_prefix())
    lab.__enter__()
    try:
        lab.start_www()
        yield lab
    finally:
        for node in [*lab.exits, lab.client]:  # shown by pytest only when the test fails
            if node is not None:
                print(f"--- log of {node.name} ({lab.prefix}) ---\n{node.log_tail(40)}")
        if lab.relay is not None:
            print(f"--- log of relay ---\n{lab.relay.log_tail(20)}")
        lab.close()


def _fetch_through_exit(lab: ExitLab, timeout: float) -> bool:
    return bool(wait_for(lambda: lab.curl(HELLO, timeout=3).returncode == 0, timeout, poll=0.5))


def test_pinned_exit_carries_web_traffic_with_its_own_address_and_stop_restores_routes(exit_lab: ExitLab) -> None:
    lab = exit_lab
    exit1, _ = lab.exits
    client = lab.client
    assert client is not None
    # IPv6 link-local addresses appear in the local table once duplicate address detection ends.
    assert wait_for(lambda: not client.host.run("ip", "-6", "addr", "show", "tentative").stdout.strip(), 10)
    before = snapshot(client.host)
    assert lab.curl(HELLO, timeout=3).returncode != 0, "the client reached the internet without an exit"

    exit1.start([client], "--exit", "--dht", "off", *POLICY, *FAST)
    client.start([exit1], "--use-exit", exit1.peer_id, "--dht", "off", *FAST)
    assert _fetch_through_exit(lab, UP_WITHIN), dump(lab.exits_view())
    result = lab.curl(HELLO)
    assert result.stdout == "hello from the internet\n", result
    sources = {src for src, path in lab.requests() if path == "/hello.txt"}
    assert sources == {lab.exit_net_ip(exit1)}, f"the server saw {sources}, not only exit1's address"
    view = lab.exits_view()
    assert view["mode"] == "pinned" and view["current"] == exit1.peer_id, dump(view)

    # The exit host itself: reachable from the overlay on its overlay address, not on its others.
    assert client.ping(exit1.ipv4, count=1).returncode == 0
    assert client.ping(lab.exit_net_ip(exit1), count=1).returncode != 0
    assert wait_for(lambda: counters(exit1).get("host_denied", {}).get("packets", 0) >= 1, 10), counters(exit1)

    # The node's own connection to the exit kept the real routes: it still runs over the underlay.
    peer = client.peer_status(exit1) or {}
    assert peer.get("state") == "up" and str(peer.get("remote", "")).startswith("198.18.1.1:"), peer

    # While up: our rules, table and nft table exist.
    during = snapshot(client.host)
    assert "not from all fwmark 0x7032 lookup 28722" in during["rules4"], during["rules4"]
    assert "suppress_prefixlength 0" in during["rules6"], during["rules6"]
    assert f"default dev {client.tun} table 28722" in during["routes4"], during["routes4"]
    assert "p2pvpn_client_" in during["nft"]

    # A crash leaves them behind; the next start cleans up, and a clean stop restores everything.
    client.stop(signal.SIGKILL)
    assert "fwmark 0x7032" in snapshot(client.host)["rules4"]
    client.restart()
    assert _fetch_through_exit(lab, UP_WITHIN), client.log_tail()
    assert client.stop() == 0
    after = snapshot(client.host)
    assert after == before, f"client networking differs after stop:\nbefore {dump(before)}\nafter {dump(after)}"

    assert exit1.stop() == 0
    assert "p2pvpn_exit_" not in exit1.host.run("nft", "list", "ruleset").stdout
    assert exit1.host.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"


def test_auto_exit_policy_refusals_are_counted_and_failover_within_10_s(exit_lab: ExitLab) -> None:
    lab = exit_lab
    client = lab.client
    assert client is not None
    lab.start_relay(*FAST[:4])
    for node in lab.exits:
        node.start((), "--exit", "--exit-capacity-mbit", "1000", *POLICY, *lab.bootstrap_args(), *FAST)
    client.start((), "--use-exit", "auto", *lab.bootstrap_args(), *FAST)
    started = time.monotonic()
    assert _fetch_through_exit(lab, UP_WITHIN), dump(lab.exits_view())
    print(f"auto exit: first request through an exit {time.monotonic() - started:.1f} s after start")

    # Both exits are listed with their published policy; the one in use is marked and served the request.
    both = wait_for(lambda: len(lab.exits_view()["candidates"]) == 2 and all(
        c["available"] for c in lab.exits_view()["candidates"]), 30)
    view = lab.exits_view()
    assert both, dump(view)
    in_use = [c for c in view["candidates"] if c["in_use"]]
    assert len(in_use) == 1 and in_use[0]["peer_id"] == view["current"], dump(view)
    assert f"{WWW_IP_DENIED}/32" in in_use[0]["deny"] and "0.0.0.0/0" in in_use[0]["allow"], dump(in_use)
    assert all(c["score"] > 0 for c in view["candidates"]), dump(view)
    current = lab.exit_by_id(view["current"])
    assert lab.curl(HELLO).returncode == 0
    assert lab.requests()[-1] == (lab.exit_net_ip(current), "/hello.txt"), lab.requests()[-3:]

    # Refused by policy: a denied address and a denied port, each answered at once and counted.
    refused_before = counters(current).get("denied", {}).get("packets", 0)
    t0 = time.monotonic()
    denied = lab.curl(f"http://{WWW_IP_DENIED}:{WWW_PORT}/hello.txt", timeout=5)
    assert denied.returncode != 0 and time.monotonic() - t0 < 4, denied  # a reject, not a timeout
    denied_port = lab.curl(f"http://{WWW_IP}:25/", timeout=5)
    assert denied_port.returncode != 0, denied_port
    assert wait_for(lambda: counters(current).get("denied", {}).get("packets", 0) >= refused_before + 2, 5), \
        counters(current)
    assert not any(src for src, path in lab.requests() if path == "/hello.txt" and src == WWW_IP_DENIED)
    assert counters(current)["forwarded"]["packets"] > 0 and counters(current)["returned"]["packets"] > 0

    # Failover: kill the exit in use during a download; new connections work through the other.
    download = client.host.popen("curl", "-sS", "--limit-rate", "2M", "--max-time", "60", "-o", "/dev/null",
                                 f"http://{WWW_IP}:{WWW_PORT}/{BIG_FILE}")
    assert wait_for(lambda: any(path == f"/{BIG_FILE}" for _, path in lab.requests()), 10), lab.requests()
    time.sleep(1.0)
    current.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert _fetch_through_exit(lab, FAILOVER_WITHIN), dump(lab.exits_view())
    took = time.monotonic() - killed
    other = next(e for e in lab.exits if e is not current)
    view = lab.exits_view()
    assert view["current"] == other.peer_id and view["history"][-1]["why"].startswith("failover"), dump(view)
    assert lab.requests()[-1] == (lab.exit_net_ip(other), "/hello.txt"), lab.requests()[-3:]
    print(f"failover: new connections through {other.name} {took:.1f} s after killing {current.name}")
    download.kill()
    download.wait(timeout=10)

    # The killed exit left its table and forwarding on; its next start replaces them.
    assert "p2pvpn_exit_" in current.host.run("nft", "list", "tables").stdout
    current.restart()
    assert wait_for(lambda: bool(counters(current)), 60), current.log_tail()
    tables = [line for line in current.host.run("nft", "list", "tables").stdout.splitlines() if "p2pvpn_exit_" in line]
    assert len(tables) == 1 and "earlier exit run" in current.log_tail(40), (tables, current.log_tail())

    # Degraded, not gone: exit2 hangs (SIGSTOP keeps its TCP connections open); the probes through its
    # tunnel go unanswered and the client moves back to exit1 within the same bound.
    assert wait_for(lambda: any(c["peer_id"] == current.peer_id and c["available"]
                                for c in lab.exits_view()["candidates"]), 60), dump(lab.exits_view())
    assert other.proc is not None
    other.proc.send_signal(signal.SIGSTOP)
    hung = time.monotonic()
    try:
        moved = wait_for(lambda: lab.current_exit() == current.peer_id, FAILOVER_WITHIN)
        took = time.monotonic() - hung
        assert moved, dump(lab.exits_view())
        assert _fetch_through_exit(lab, FAILOVER_WITHIN - took), dump(lab.exits_view())
        print(f"failover from a hung exit: {time.monotonic() - hung:.1f} s until new connections work")
    finally:
        other.proc.send_signal(signal.SIGCONT)


WATCH = """table inet p2vwatch {
  counter from_client { }
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    ip saddr %s counter name from_client
  }
}
"""


def _packets_from_client(node_host: object, lab: ExitLab) -> int:
    import json as _json

    out = node_host.run("nft", "-j", "list", "counter", "inet", "p2vwatch", "from_client").stdout  # type: ignore[attr-defined]
    return int(next(i["counter"]["packets"] for i in _json.loads(out)["nftables"] if "counter" in i))


def test_multi_hop_exit_sees_the_relay_never_the_client(exit_lab: ExitLab) -> None:
    lab = exit_lab
    client, relay = lab.client, lab.relay
    assert client is not None and relay is not None
    for node in lab.exits:  # count every packet from the client's underlay address, from before the start
        node.host.run("nft", "-f", "-", input=WATCH % client.address)
    lab.start_relay(*FAST[:4])
    for node in lab.exits:
        node.start((), "--exit", *POLICY, *lab.bootstrap_args(), *FAST)
    client.start((), "--use-exit", "auto", "--exit-via", relay.peer_id, *lab.bootstrap_args(), *FAST)
    started = time.monotonic()
    assert _fetch_through_exit(lab, UP_WITHIN), dump(lab.exits_view())
    print(f"multi-hop: first request through relay and exit {time.monotonic() - started:.1f} s after start")

    view = lab.exits_view()
    current = lab.exit_by_id(view["current"])
    assert view["via"]["relay"] == relay.peer_id, dump(view)
    in_use = next(c for c in view["candidates"] if c["in_use"])
    assert in_use["path"] == "relayed" and in_use["relay"] == relay.peer_id, dump(in_use)
    assert lab.requests()[-1] == (lab.exit_net_ip(current), "/hello.txt"), lab.requests()[-3:]

    # A little traffic more, then look at the exit's connection table and the packet counters.
    for _ in range(3):
        assert lab.curl(HELLO).returncode == 0
    peers = current.host.run("ss", "-tnH", "state", "established").stdout
    remote_ips = {line.split()[-1].rsplit(":", 1)[0] for line in peers.splitlines() if line.strip()}
    assert relay.address in remote_ips, peers
    assert client.address not in remote_ips, peers
    for node in lab.exits:
        assert _packets_from_client(node.host, lab) == 0, f"{node.name} received packets from the client's address"
    assert relay.status()["relay"]["circuits_total"] >= 1
    refused = view["via"]["refused_direct_dials"]
    print(f"multi-hop: exit {current.name} connected only to {sorted(remote_ips)}; "
          f"client refused {refused} direct dials (DHT, AutoNAT) to hidden-from peers")


def test_ipv6_web_traffic_leaves_through_the_exit_masqueraded_to_its_address(exit_lab: ExitLab) -> None:
    """curl -6 from the client reaches [2001:db8::10] only through the exit, seen from the exit's 2001:db8::1.

    The exit role masquerades the overlay's ULA sources (NAT66, p2pvpn.exit.nft) as it does IPv4; the
    client's IPv6 default route into the TUN is the same policy routing as IPv4's (exit.client_routes).
    """
    lab = exit_lab
    exit1, _ = lab.exits
    client = lab.client
    assert client is not None
    lab.start_www6()
    assert lab.curl(HELLO6, "-6", timeout=3).returncode != 0, "the client reached the IPv6 internet without an exit"

    exit1.start([client], "--exit", "--dht", "off", *POLICY, *FAST)
    client.start([exit1], "--use-exit", exit1.peer_id, "--dht", "off", *FAST)
    assert wait_for(lambda: lab.curl(HELLO6, "-6", timeout=3).returncode == 0, UP_WITHIN, poll=0.5), \
        dump(lab.exits_view())
    result = lab.curl(HELLO6, "-6")
    assert result.returncode == 0 and result.stdout == "hello from the internet\n", result
    sources = {src for src, path in lab.requests("www6.log") if path == "/hello.txt" and src != WWW6_IP}
    assert sources == {lab.exit_net6_ip(exit1)}, f"the IPv6 server saw {sources}, not only exit1's address"
    # The exit's named counters saw the IPv6 flow both ways, and IPv4 still works beside it.
    assert wait_for(lambda: counters(exit1).get("returned", {}).get("packets", 0) > 0, 10), counters(exit1)
    assert lab.curl(HELLO).returncode == 0
    route = client.host.run("ip", "-6", "route", "get", WWW6_IP).stdout
    assert f"dev {client.tun}" in route, route

    assert client.stop() == 0 and exit1.stop() == 0
    assert lab.curl(HELLO6, "-6", timeout=3).returncode != 0, "IPv6 still left after the client stopped"


# -- bad input: one line, non-zero exit, nothing left behind ----------------------------------------------


def _up(node: LabNode, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = p2pvpn_argv("up", "--dir", str(node.directory), "--listen", node.listen, "--tun", node.tun, *args)
    return node.host.run(*prefix, *argv, check=False, timeout=60)


def _one_line_error(node: LabNode, result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pvpn: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert node.host.run("ip", "link", "show", node.tun, check=False).returncode != 0, "TUN left behind"
    assert "p2pvpn_" not in node.host.run("nft", "list", "tables").stdout
    assert "28722" not in node.host.run("ip", "rule", "show").stdout


def test_bad_exit_input_is_one_line(make_lab: Callable[..., Lab]) -> None:
    node = make_lab(1, start=False).nodes[0]
    _one_line_error(node, _up(node, "--use-exit", "12D3KooWnotapeer"), "use_exit: invalid peer ID")
    _one_line_error(node, _up(node, "--exit", "--exit-deny", "10.0.0.1/8"), "exit_deny:", "host bits")
    _one_line_error(node, _up(node, "--exit", "--use-exit", "auto"), "an exit node does not use another exit")
    _one_line_error(node, _up(node, "--exit", prefix=("env", "PATH=/nonexistent")), "`nft`", "not installed")
    os.chown(node.directory, NOBODY, NOBODY)
    for path in node.directory.iterdir():
        os.chown(path, NOBODY, NOBODY)
    os.chmod(node.directory.parent, 0o711)  # nobody may pass through the lab's temp dir
    _one_line_error(node, _up(node, "--exit", prefix=AS_NOBODY), "--exit needs root")
    _one_line_error(node, _up(node, "--use-exit", "auto", prefix=AS_NOBODY), "--use-exit needs root")
