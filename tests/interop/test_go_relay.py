"""Circuit relay v2 across implementations (all on loopback).

* A Python node behind a "NAT" (``reachability = private``) reserves a slot on
  a **go-libp2p relay** (``go-peer relay``, named with ``static_relays``); a
  second Python node reaches it through that relay: the tunnel comes up
  relayed via the Go relay (hole punching off, so it stays there) and
  carries packets both ways.
* A **Go peer** (``go-peer probe``) reaches a Python node through a
  **Python relay** (a node with ``relay = true``) by its ``/p2p-circuit``
  address, and opens a tunnel-protocol stream on the relayed connection.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio
from gopeer import LOOPBACK_LISTEN, GoPeer

from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4

TUNNEL = "/p2pvpn/tunnel/1.0.0"
RESERVE_WITHIN = 20.0  # seconds for a node told it is private to hold a slot on its static relay


async def _reserved_on(node: Node, relay_id: str) -> None:
    with trio.fail_after(RESERVE_WITHIN):
        while node.traversal is None or relay_id not in {str(r) for r in node.traversal.keeper.reservations}:
            await trio.sleep(0.05)


async def test_python_reaches_python_through_a_go_relay(go_peer_bin: Path, tmp_path: Path) -> None:
    with GoPeer(go_peer_bin, "relay", *(f"--listen={a}" for a in LOOPBACK_LISTEN[:1])) as relay:
        relay_id = relay.ready()["peer_id"]
        relay_addr = relay.addr()
        cluster = Cluster(tmp_path)
        cluster.node("a")  # a's key first: b cannot dial a (it has no address), it allows a's tunnel by ID
        b = cluster.node("b", dht="off", reachability="private", hole_punch=False, static_relays=(relay_addr,),
                         allow_peers=(str(cluster.nodes["a"].peer_id),))
        a = cluster.node("a", peers=[f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}"], dht="off",
                         reachability="public", hole_punch=False)
        async with running(b):
            await _reserved_on(b, relay_id)
            assert any(f"/p2p/{relay_id}/p2p-circuit" in str(x) for x in b.traversal.keeper.relay_addrs())  # type: ignore[union-attr]
            async with running(a):
                await wait_up(a, b, timeout=20)
                await wait_up(b, a, timeout=20)
                for src, dst in ((a, b), (b, a)):
                    view = next(p for p in src.peers() if p["peer_id"] == str(dst.peer_id))
                    assert view["path"] == "relayed" and view["relay"] == relay_id, view
                    pkt = udp4(str(src.addresses.ipv4), str(dst.addresses.ipv4), b"through the go relay")
                    cluster.tuns[src.config.tun].inject(pkt)
                    with trio.fail_after(10):
                        assert await cluster.tuns[dst.config.tun].delivered.receive() == pkt
        assert relay.proc.poll() is None, relay.describe()  # the Go relay is still fine


async def test_go_peer_reaches_python_through_a_python_relay(go_peer_bin: Path, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    r = cluster.node("r", dht="off", reachability="public", relay=True)
    b = cluster.node("b", dht="off", reachability="private", hole_punch=False, static_relays=(cluster.addr("r"),))
    async with running(r, b):
        await _reserved_on(b, str(r.peer_id))
        target = f"{cluster.addr('r')}/p2p-circuit/p2p/{b.peer_id}"
        probe = await trio.to_thread.run_sync(lambda: subprocess.run(
            [str(go_peer_bin), "probe", f"--addr={target}", f"--protocol={TUNNEL}", "--timeout=15s"],
            capture_output=True, text=True, timeout=30, check=False))
        events = [json.loads(line) for line in probe.stdout.splitlines() if line.startswith("{")]
        result = next((e for e in events if e.get("event") == "probe"), None)
        assert result is not None and result["ok"], (probe.returncode, probe.stdout, probe.stderr[-2000:])
        assert result["peer"] == str(b.peer_id)
        assert "/p2p-circuit" in result["remote_addr"] and result["relayed"], result
        assert result["streams"][TUNNEL]["negotiated"] == TUNNEL
        assert r.relay is not None and r.relay.circuits_total >= 1
