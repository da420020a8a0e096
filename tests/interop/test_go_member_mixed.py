"""A mixed Python and Go network (issue 17): the Go peer as a full member of a Python-owned network::

    owner (p2pvpn up, TUN)   m (p2pvpn up, TUN)   gov (go-peer vpn)   mallory (go-peer vpn, forged)
    eth0 198.18.1.1          eth0 198.18.1.2      eth0 198.18.1.3     eth0 198.18.1.4
         └──────────────────────── switch lan 198.18.1.0/24 ────────────────────┘

The owner's directory comes from ``network create``; ``m`` joins with ``admit`` + ``join``; the
Go peer gets its certificate from ``p2pvpn admit`` (group ``gophers``) and dials both Python
nodes. One story, in order:

a. certificates both ways, and traffic over the datagram path (§16) in both directions: both
   sides report the path ``udp``; transfers come back with the SHA-256 they were sent with;
b. an ACL (§17) set with ``p2pvpn policy set`` on the owner's directory, spread by push:
   rule 1 denies UDP 7007 from group ``gophers`` to the owner -- the owner (Python) enforces it;
   rule 2 denies all UDP from ``m`` to group ``gophers`` -- the Go peer enforces it (its deny
   counter moves), while the owner's UDP to the Go peer, m's pings, and the replies to the Go
   peer's own UDP flow to m (stateful) still pass;
c. the owner revokes ``m``: the Go peer closes m's tunnel and refuses it after, the owner and
   the Go peer keep working;
d. a Go peer with a forged certificate is refused by the owner and by the Go member.

Everything lives in namespaces this test creates and deletes (underlay 198.18.0.0/15, overlay
100.64.0.0/10 and fd00::/8).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from gopeer import GoPeer, run_tool
from test_go_datagram import UDP_ECHO_SERVER, UDP_TRANSFER

from e2e.test_membership_netns import FAST, MemberLab, cli, status
from p2pvpn.lab.demo import LabNode, wait_for
from p2pvpn.lab.topology import new_prefix

pytestmark = pytest.mark.netns

GO_SEED = "47" * 32
MALLORY_SEED = "4d" * 32
GO_PORT = 4243
ECHO_PORT = 7007
TRANSFER_BYTES = 256 * 1024

# Sends argv[3] UDP datagrams to argv[1]:argv[2] from one socket and counts the echoes (bounded: 3 s).
UDP_PROBE = """
import json, socket, sys, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
for i in range(n):
    s.sendto(i.to_bytes(8, "big") + b"probe", (dst, port))
got, end = set(), time.monotonic() + 3
while len(got) < n and time.monotonic() < end:
    try:
        got.add(int.from_bytes(s.recv(100)[:8], "big"))
    except TimeoutError:
        pass
print(json.dumps({"sent": n, "echoed": len(got)}))
"""


def go_peer_id(binary: Path, seed: str) -> str:
    return str(run_tool(binary, ["membership", "id", "--seed", seed])[0]["peer_id"])


def policy_of(node: LabNode) -> dict[str, Any]:
    return status(node).get("policy") or {}


def py_peer(node: LabNode, peer_id: str) -> dict[str, Any]:
    return next((p for p in status(node).get("peers", []) if p["peer_id"] == peer_id), {})


def transfer(src: LabNode, dst_ipv4: str, port: int = 7) -> dict[str, Any]:
    out = src.host.run(sys.executable, "-I", "-c", UDP_TRANSFER, dst_ipv4, str(port), str(TRANSFER_BYTES),
                       timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def probe(src: LabNode, dst_ipv4: str, port: int, count: int = 10) -> dict[str, Any]:
    out = src.host.run(sys.executable, "-I", "-c", UDP_PROBE, dst_ipv4, str(port), str(count), timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def go_stats(go: GoPeer) -> dict[str, Any]:
    start = go.mark()
    os.kill(go.proc.pid, signal.SIGUSR1)
    return go.wait_for("stats", start=start, timeout=10)


def traffic_round(go: GoPeer, count: int) -> dict[str, dict[str, Any]]:
    """SIGUSR2: one round of --traffic-to to every destination; their traffic_done events by destination."""
    start = go.mark()
    os.kill(go.proc.pid, signal.SIGUSR2)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120
    while len(done) < count and time.monotonic() < deadline:
        for event in go.events[start:]:
            if event.get("event") == "traffic_done":
                done[event["dst"]] = event
        time.sleep(0.2)
    assert len(done) == count, f"traffic rounds: {done}\n{go.describe()}"
    return done


def write_policy(path: Path, owner: LabNode, m: LabNode) -> Path:
    path.write_text(f"""default = "allow"

[[rule]]
action = "deny"
from = "group:gophers"
to = "peer:{owner.peer_id}"
proto = "udp"
ports = "{ECHO_PORT}"

[[rule]]
action = "deny"
from = "peer:{m.peer_id}"
to = "group:gophers"
proto = "udp"
""")
    return path


def test_a_go_member_in_a_python_network_with_certificates_datagrams_an_acl_and_a_revocation(
        go_peer_bin: Path) -> None:
    with MemberLab(new_prefix(), ["m"]) as lab:
        gov: GoPeer | None = None
        mallory: GoPeer | None = None
        try:
            lab.admit("m")
            owner, m = lab["owner"], lab["m"]
            lan = lab.topo.nodes["lan"]
            go_host, mal_host = lab.topo.add_host("gov"), lab.topo.add_host("mallory")
            go_ip, mal_ip = lab.topo.attach(go_host, lan), lab.topo.attach(mal_host, lan)  # type: ignore[arg-type]
            go_id = go_peer_id(go_peer_bin, GO_SEED)
            issued = json.loads(cli("admit", go_id, "--dir", str(owner.directory), "--name", "gopher",
                                    "--groups", "gophers", "--json"))

            owner.start([m], *FAST)
            m.start([owner], *FAST)
            for node in (owner, m):
                node.host.popen(sys.executable, "-I", "-c", UDP_ECHO_SERVER, str(ECHO_PORT), "600")
            policy_file = lab.workdir / "go-policy"
            gov = GoPeer(go_peer_bin, "vpn", "--seed", GO_SEED, "--network", lab.network_id,
                         "--cert", issued["certificate"], "--policy", str(policy_file), "--dht", "off",
                         "--keepalive", "1s", "--listen", f"/ip4/{go_ip}/tcp/{GO_PORT}",
                         "--peer", owner.dial_addr, "--peer", m.dial_addr,
                         "--traffic-to", owner.ipv4, "--traffic-to", m.ipv4, "--traffic-port", str(ECHO_PORT),
                         "--traffic-bytes", str(TRANSFER_BYTES), "--traffic-on-usr2", netns=go_host)
            go = gov.ready()
            assert (go["ipv4"], go["ipv6"]) == (issued["ipv4"], issued["ipv6"])  # the certificate decides

            # a. Certificates both ways; the datagram path; traffic both ways with matching hashes.
            for node in (owner, m):
                accepted = gov.wait_for("certificate_accepted", lambda e, n=node: e["peer"] == n.peer_id,
                                        timeout=90)
                assert (accepted["name"], accepted["ipv4"]) == (node.name, node.ipv4), accepted
                gov.wait_for("path", lambda e, n=node: e["peer"] == n.peer_id and e["path"] == "udp", timeout=60)
                assert wait_for(lambda n=node: py_peer(n, go_id).get("data_path") == "udp", 60, poll=0.3), \
                    f"{node.name} has no udp path to the Go peer: {py_peer(node, go_id)}"
            to_go = transfer(owner, go["ipv4"])
            assert to_go["echoed"] == to_go["chunks"] and to_go["sent_sha256"] == to_go["echo_sha256"], to_go
            ping = m.ping(go["ipv4"], "-q", count=3)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            rounds = traffic_round(gov, 2)
            for dst, done in rounds.items():
                assert "error" not in done and done["sent_sha256"] == done["echo_sha256"], done
                assert done["pings_answered"] == done["pings_sent"] and done["path_at_start"] == "udp", done
            st = go_stats(gov)
            for node in (owner, m):
                assert st["tunnels"][node.peer_id]["path"] == "udp", st["tunnels"]
            assert st["policy"]["seq"] == 0 and not st["policy"]["active"], st["policy"]

            # b. The ACL: set on the owner's directory, pushed to m and to the Go peer.
            started = time.monotonic()
            cli("policy", "set", str(write_policy(lab.workdir / "acl.toml", owner, m)), "--dir", str(owner.directory))
            applied = gov.wait_for("policy_applied", lambda e: e["seq"] == 1, timeout=30)
            policy_took = time.monotonic() - started
            assert applied["via"] == "push" and applied["active"] and applied["rules_here"] == 1, applied
            assert wait_for(lambda: policy_of(m).get("seq") == 1 and policy_of(owner).get("seq") == 1, 30,
                            poll=0.3), f"policy 1 not on the Python nodes: {policy_of(owner)} {policy_of(m)}"
            assert policy_file.read_text().startswith("p2pvpn-policy1:")  # a better policy is saved (§17.4)
            before = go_stats(gov)["policy"]

            # b1. Enforced by the Go peer: m's UDP is denied; m's pings and the owner's UDP pass.
            denied = probe(m, go["ipv4"], 7)
            assert denied["echoed"] == 0, denied
            ping = m.ping(go["ipv4"], "-q", count=3)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            to_go = transfer(owner, go["ipv4"])
            assert to_go["echoed"] == to_go["chunks"] and to_go["sent_sha256"] == to_go["echo_sha256"], to_go
            after = go_stats(gov)
            moved = after["policy"]["denied_by_reason"].get("rule", 0) - before["denied_by_reason"].get("rule", 0)
            assert moved >= denied["sent"], (before, after["policy"])
            assert after["counters"]["policy_denied"] >= moved, after["counters"]

            # b2. Enforced by the owner (Python): the Go peer's UDP to the owner's 7007 is denied; the same
            #     round's flow to m's 7007 passes, and so do m's UDP replies through the Go peer's filter.
            owner_denied = policy_of(owner).get("denied_by_reason", {}).get("rule", 0)
            go_rule = after["policy"]["denied_by_reason"].get("rule", 0)
            rounds = traffic_round(gov, 2)
            to_m, to_owner = rounds[m.ipv4], rounds[owner.ipv4]
            assert "error" not in to_m and to_m["sent_sha256"] == to_m["echo_sha256"], to_m
            assert to_owner["chunks_echoed"] == 0 and to_owner["pings_answered"] == to_owner["pings_sent"], to_owner
            assert policy_of(owner)["denied_by_reason"].get("rule", 0) > owner_denied, policy_of(owner)
            final = go_stats(gov)["policy"]
            assert final["denied_by_reason"].get("rule", 0) == go_rule, final  # m's replies were not denied
            assert final["flows"] >= 1 and final["conntrack"]["opened"] >= 1, final
            print(f"ACL: on the Go peer {policy_took:.1f} s after `policy set`; Go {final}; owner {policy_of(owner)}")

            # c. The owner revokes m: the Go peer closes m's tunnel, refuses it after; the owner stays.
            mark, started = gov.mark(), time.monotonic()
            cli("revoke", "m", "--dir", str(owner.directory))
            down = gov.wait_for("tunnel_down", lambda e: e["peer"] == m.peer_id, start=mark, timeout=20)
            print(f"revocation: the Go peer closed m's tunnel {time.monotonic() - started:.1f} s after `revoke`")
            assert "NOT_AUTHORIZED" in (down.get("sent_close"), down.get("received_close")), down
            refused = gov.wait_for("hello_rejected", lambda e: e["peer"] == m.peer_id, start=mark, timeout=30)
            assert refused["code"] == "NOT_AUTHORIZED" and "revoked" in refused["reason"], refused
            assert gov.find("tunnel_down", lambda e: e["peer"] == owner.peer_id, start=mark) is None
            ping = owner.ping(go["ipv4"], "-q", count=3)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert m.ping(go["ipv4"], "-q", count=2, timeout=15).returncode != 0

            # d. A forged certificate (signed by a key that is neither the owner's nor an admin's): refused.
            mal_id = go_peer_id(go_peer_bin, MALLORY_SEED)
            forged = run_tool(go_peer_bin, ["membership", "issue", "--signer-seed", "66" * 32, "--network",
                                            lab.network_id, "--peer", mal_id, "--name", "mallory", "--forge"])
            mallory = GoPeer(go_peer_bin, "vpn", "--seed", MALLORY_SEED, "--network", lab.network_id,
                             "--cert", forged[0]["certificate"], "--dht", "off", "--keepalive", "1s",
                             "--listen", f"/ip4/{mal_ip}/tcp/{GO_PORT}", "--peer", owner.dial_addr,
                             "--peer", f"/ip4/{go_ip}/tcp/{GO_PORT}/p2p/{go_id}", netns=mal_host)
            mallory.ready()
            by_owner = mallory.wait_for("close_received", lambda e: e["peer"] == owner.peer_id, timeout=30)
            assert by_owner["code"] == "NOT_AUTHORIZED" and "neither the network owner" in by_owner["reason"]
            by_go = gov.wait_for("hello_rejected", lambda e: e["peer"] == mal_id, timeout=30)
            assert by_go["code"] == "NOT_AUTHORIZED" and "neither the network owner" in by_go["reason"], by_go
            # (mallory itself sees its peers' valid Hellos before their Close: only their side counts)
            assert gov.find("tunnel_up", lambda e: e["peer"] == mal_id) is None
            assert py_peer(owner, mal_id).get("state") != "up", py_peer(owner, mal_id)
            assert go_stats(gov)["counters"]["certificate_refused"] >= 1
        except BaseException:
            for node in lab.nodes.values():
                print(f"--- log of {node.name} ---\n{node.log_tail(40)}")
            for peer in (gov, mallory):
                if peer is not None:
                    print(peer.describe())
            raise
        finally:
            for peer in (gov, mallory):
                if peer is not None:
                    peer.stop()
