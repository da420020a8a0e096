"""A peer that restarts is redialed by the side that stayed up (p2pvpn.session.manager backoff)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pvpn.session import manager
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4


async def test_side_that_stayed_up_redials_a_restarted_peer(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.node("a", dht="off")
    b = cluster.node("b", dht="off")
    a = cluster.node("a", peers=[cluster.addr("b")], dht="off")
    # b knows a only as an allowed peer: it never dials, so only a's redial can bring the tunnel back.
    b_config = {"dht": "off", "allow_peers": (str(a.peer_id),)}
    async with running(a):
        b = cluster.node("b", **b_config)
        async with running(b):
            await wait_up(a, b)
            await trio.sleep(manager.STABLE_AFTER + 0.2)  # a tunnel that worked: the backoff starts over
        with trio.fail_after(10):
            while a.manager.peers[b.peer_id].tunnel is not None:
                await trio.sleep(0.02)
        b = cluster.node("b", **b_config)
        async with running(b):
            await wait_up(a, b, timeout=10)
            pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"after the restart")
            cluster.tuns["a"].inject(pkt)
            with trio.fail_after(5):
                assert await cluster.tuns["b"].delivered.receive() == pkt
