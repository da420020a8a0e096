"""Real ``ping`` from a Python node's TUN to the Go vpn peer, found through a Go DHT::

    boot (go-peer dht)      gov (go-peer vpn)       py (p2pvpn up, TUN p2pvpn0)
    eth0 198.18.5.1         eth0 198.18.5.2         eth0 198.18.5.3
         └──────────────── switch lan (br0) ──────────────────┘

The Go peer republishes every 5 s (``--record-ttl 10s``): a py-libp2p DHT
server that provides "members" itself answers find_providers from its own
store only (docs/interop.md, bug 3), so it learns the Go peer when the Go
peer next announces itself to it.

The Python node knows only the bootstrap node; it finds the Go peer's signed
record in the DHT, opens the tunnel, and the kernel's ping (IPv4 and IPv6)
through its TUN is answered by the Go peer's userspace responder. Everything
lives in namespaces this test creates and deletes (underlay 198.18.0.0/15).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from gopeer import GoPeer

from p2pvpn.config import Config
from p2pvpn.control import client
from p2pvpn.node import find_control_path
from p2pvpn.lab.topology import Topology

PORT = 4001
SUBNET = "198.18.5.0/24"


def wait_tunnel(control: Path, peer_id: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            status = client.request(control, "status", timeout=3)
            last = status
            peer = next((p for p in status["peers"] if p["peer_id"] == peer_id), None)
            if peer is not None and peer["state"] == "up":
                return peer
        except Exception as exc:  # not listening yet, or busy: retry until the deadline
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"no tunnel to the Go peer within {timeout:g} s; last status: {last}")


@pytest.mark.netns
def test_ping_through_a_real_tun_reaches_the_go_vpn_peer(go_peer_bin: Path, tmp_path: Path) -> None:
    with Topology() as topo:
        lan = topo.add_switch("lan", SUBNET)
        hosts = {name: topo.add_host(name) for name in ("boot", "gov", "py")}
        ips = {name: topo.attach(host, lan) for name, host in hosts.items()}
        boot = GoPeer(go_peer_bin, "dht", "--listen", f"/ip4/{ips['boot']}/tcp/{PORT}", netns=hosts["boot"])
        gov = None
        log = (tmp_path / "py.log").open("wb")
        try:
            boot_addr = boot.addr()
            gov = GoPeer(go_peer_bin, "vpn", "--listen", f"/ip4/{ips['gov']}/tcp/{PORT}", "--bootstrap", boot_addr,
                         "--keepalive", "1s", "--record-ttl", "10s", netns=hosts["gov"])
            go = gov.ready()
            gov.wait_for("published", lambda e: e["ok"], timeout=30)

            node_dir = tmp_path / "py"
            subprocess.run([sys.executable, "-m", "p2pvpn", "init", "--dir", str(node_dir)], check=True,
                           capture_output=True, timeout=30)
            proc = hosts["py"].popen(
                sys.executable, "-m", "p2pvpn", "up", "--dir", str(node_dir),
                "--listen", f"/ip4/{ips['py']}/tcp/{PORT}", "--bootstrap", boot_addr,
                "--allow-peer", go["peer_id"],  # without a network owner only listed peers get tunnels
                "--discovery-interval", "0.5", stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            peer = wait_tunnel(find_control_path(Config(), node_dir), go["peer_id"], proc)
            assert peer["learned_from"] == "dht" and (peer["ipv4"], peer["ipv6"]) == (go["ipv4"], go["ipv6"])

            for family, dest in (("-4", go["ipv4"]), ("-6", go["ipv6"])):
                ping = hosts["py"].run("ping", family, "-c", "3", "-i", "0.2", "-W", "2", dest, check=False,
                                       timeout=30)
                assert ping.returncode == 0, f"ping {dest}: {ping.stdout} {ping.stderr}"
                assert " 0% packet loss" in ping.stdout, ping.stdout
            gov.wait_for("tunnel_up")
        except BaseException:
            print((tmp_path / "py.log").read_text(errors="replace")[-3000:])
            if gov is not None:
                print(gov.describe())
            raise
        finally:
            if gov is not None:
                gov.stop()
            boot.stop()
            log.close()
