"""The operator's story with real `p2pvpn up` processes in namespaces.

::

    n1 (owner of the network; peers from config.toml: n2, n3; --metrics 127.0.0.1:9469)
    n2 (member "laptop-of-alice")      n3 (no certificate; listed by n1 only)

1. `p2pvpn peers` at COLUMNS=80 shows n2 by its certificate's name, every line within 80 columns;
2. /metrics, fetched with curl inside n1's namespace, parses with prometheus-client's parser;
3. n1's config.toml drops n3, then SIGHUP: n2's tunnel is the same (its "since" unchanged), n3's
   is closed with NOT_AUTHORIZED; a malformed config.toml before that changed nothing;
4. `p2pvpn down`: exit 0, the node's process exits 0, its TUN is gone, n2 heard Close(NORMAL);
   a second `down` is one line and a non-zero exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pvpn.cli_membership import set_config
from p2pvpn.lab.demo import Lab, LabNode, wait_for
from p2pvpn.testing.owned import make_owned_network

pytestmark = pytest.mark.netns

FAST = ("--keepalive", "1", "--dht", "off")
METRICS = "127.0.0.1:9469"


def cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PVPN")}
    env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "p2pvpn", *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _peer(node: LabNode, other: LabNode) -> dict:
    return node.peer_status(other) or {}


def _up(node: LabNode, other: LabNode) -> bool:
    return _peer(node, other).get("state") == "up"


def test_peers_metrics_sighup_and_down_on_real_nodes(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(3, start=False)
    n1, n2, n3 = lab.nodes
    nid, _ = make_owned_network(n1.directory, {"laptop-of-alice": n2.directory})
    set_config(n1.directory, peers=[n2.dial_addr, n3.dial_addr])
    n1.start((), "--network", nid, "--metrics", METRICS, *FAST)
    n2.start([n1], *FAST)
    n3.start([n1], "--network", nid, *FAST)
    assert wait_for(lambda: _up(n1, n2) and _up(n1, n3), 90), (n1.log_tail(), n3.log_tail())
    n2_ipv4 = _peer(n1, n2)["ipv4"]  # the certificate's address (LabNode.ipv4 is the derived one)

    # 1. peers at 80 columns, with the certificate's name
    result = cli("peers", "--dir", str(n1.directory))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    assert any("laptop-of-alice" in line and n2_ipv4 in line for line in lines), result.stdout
    assert any(n3.peer_id[-6:] in line for line in lines), result.stdout

    # 2. /metrics from inside n1's namespace, parsed
    assert n1.ping(n2_ipv4, count=2).returncode == 0
    page = n1.host.run("curl", "-sS", "--max-time", "10", f"http://{METRICS}/metrics").stdout
    families = {f.name: f.samples for f in text_string_to_metric_families(page)}
    info = [s for s in families["p2pvpn_peer_info"] if s.labels["peer"] == n2.peer_id]
    assert [s.labels["name"] for s in info] == ["laptop-of-alice"], info
    sent = [s.value for s in families["p2pvpn_peer_packets"]
            if s.name == "p2pvpn_peer_packets_total" and s.labels == {"peer": n2.peer_id, "direction": "out"}]
    assert sent and sent[0] >= 2, sent
    up = {s.labels["peer"] for s in families["p2pvpn_peer_state"] if s.labels["state"] == "up" and s.value == 1}
    assert up == {n2.peer_id, n3.peer_id}, up
    assert n1.host.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                       f"http://{METRICS}/other", check=False).stdout == "404"

    # 3. SIGHUP: malformed first (nothing changes), then without n3
    since = _peer(n1, n2)["since"]
    assert n1.proc is not None
    config_toml = n1.directory / "config.toml"
    good = config_toml.read_text()
    config_toml.write_text(good + "\npeers = [\n")
    n1.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused, running configuration kept" in n1.log_tail(20), 10), n1.log_tail()
    assert _up(n1, n3) and _peer(n1, n2)["since"] == since
    config_toml.write_text(good)
    set_config(n1.directory, peers=[n2.dial_addr])
    n1.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _peer(n1, n3) == {} and not _up(n3, n1), 15), (n1.log_tail(), _peer(n1, n3))
    assert "NOT_AUTHORIZED" in n3.log_tail(40), n3.log_tail(40)
    time.sleep(2)  # n3 keeps dialing: refused each time, never a peer of n1 again
    assert _peer(n1, n3) == {} and _peer(n1, n2)["since"] == since and _up(n1, n2)
    assert n1.ping(n2_ipv4, count=1).returncode == 0

    # 4. down
    result = cli("down", "--dir", str(n1.directory))
    assert result.returncode == 0 and result.stdout.startswith(f"stopped node {n1.peer_id}"), result
    assert n1.proc.wait(timeout=10) == 0
    assert n1.host.run("ip", "link", "show", n1.tun, check=False).returncode != 0, "TUN left behind"
    assert wait_for(lambda: "NORMAL: node shutting down" in n2.log_tail(40), 10), n2.log_tail(40)
    again = cli("down", "--dir", str(n1.directory))
    assert again.returncode != 0 and again.stderr.strip().count("\n") == 0, again
    assert again.stderr.startswith("p2pvpn: error: no node is running"), again.stderr
