"""Discovery with real libp2p hosts and a real DHT in one process (in-memory TUNs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pvpn import addressing
from p2pvpn.testing.cluster import Cluster, running, wait_mesh, wait_up
from p2pvpn.testing.packets import udp4

# trust_members=yes: the bootstrap node has no bootstrap of its own, and auto would keep it closed.
FAST = {"record_ttl": 8.0, "discovery_interval": 0.5, "trust_members": "yes"}
MESH = {"record_ttl": 30.0, "discovery_interval": 0.5, "trust_members": "yes"}  # expiry is not what the mesh test is about


async def test_nodes_given_only_a_bootstrap_form_a_full_mesh(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    boot = cluster.node("n0", **MESH)
    others = [cluster.node(f"n{i}", bootstrap=[cluster.addr("n0")], **MESH) for i in range(1, 6)]
    nodes = [boot, *others]
    async with running(*nodes):
        await wait_mesh(nodes, timeout=90)
        a, b = others[0], others[-1]
        pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"found you")
        cluster.tuns["n1"].inject(pkt)
        with trio.fail_after(5):
            assert await cluster.tuns["n5"].delivered.receive() == pkt
        peer = a.manager.peers[b.peer_id]
        assert peer.learned_from == "dht" and peer.record is not None


async def test_a_node_that_leaves_is_dropped_after_its_ttl(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    boot = cluster.node("n0", **FAST)
    a = cluster.node("n1", bootstrap=[cluster.addr("n0")], **FAST)
    b = cluster.node("n2", bootstrap=[cluster.addr("n0")], **FAST)
    async with running(boot, a):
        async with running(b):
            await wait_mesh([boot, a, b], timeout=30)
        left = trio.current_time()
        with trio.fail_after(FAST["record_ttl"] + 10):
            while b.peer_id in a.manager.peers:
                await trio.sleep(0.1)
        assert trio.current_time() - left <= FAST["record_ttl"] + 10
        assert a.manager.routes.lookup(b.addresses.ipv4.packed) is None
        assert all(p["peer_id"] != str(b.peer_id) for p in a.peers())


async def test_address_collision_resolved_by_lower_peer_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(tmp_path)
    boot = cluster.node("n0", **FAST)
    a = cluster.node("n1", bootstrap=[cluster.addr("n0")], **FAST)
    b = cluster.node("n2", bootstrap=[cluster.addr("n0")], **FAST)
    low, high = sorted([a, b], key=lambda n: n.peer_id.to_bytes())
    shared = low.addresses.ipv4
    real = addressing.derive_ipv4

    def colliding(peer_id: bytes, network: str, index: int = 0):  # the hook: force both onto one IPv4
        if index == 0 and peer_id in (low.peer_id.to_bytes(), high.peer_id.to_bytes()):
            return shared, 0
        return real(peer_id, network, index)

    monkeypatch.setattr(addressing, "derive_ipv4", colliding)
    high.addresses = addressing.derive(high.peer_id.to_bytes(), high.config.network)
    assert high.addresses.ipv4 == low.addresses.ipv4
    async with running(boot, a, b):
        with trio.fail_after(30):
            while high.addresses.ipv4 == shared:
                await trio.sleep(0.1)
        assert low.addresses.ipv4 == shared and high.addresses.index >= 1
        await wait_up(low, high, timeout=30)
        await wait_up(high, low, timeout=30)
        with trio.fail_after(20):
            while low.manager.peers[high.peer_id].addresses.ipv4 == shared:
                await trio.sleep(0.1)
        pkt = udp4(str(high.addresses.ipv4), str(low.addresses.ipv4), b"moved")
        cluster.tuns[[k for k, v in cluster.nodes.items() if v is high][0]].inject(pkt)
        with trio.fail_after(10):
            assert await cluster.tuns[[k for k, v in cluster.nodes.items() if v is low][0]].delivered.receive() == pkt
