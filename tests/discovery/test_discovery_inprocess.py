"""Discovery with real libp2p hosts and a real DHT in one process (in-memory TUNs).

Discovered members get tunnels only in a network with an owner (their records carry
certificates, docs/protocol.md §15.9.4); without one, records serve listed peers only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pvpn import addressing
from p2pvpn.testing.cluster import Cluster, running, wait_mesh, wait_up
from p2pvpn.testing.packets import udp4

FAST = {"record_ttl": 8.0, "discovery_interval": 0.5}
MESH = {"record_ttl": 30.0, "discovery_interval": 0.5}  # expiry is not what the mesh test is about


async def test_members_given_only_a_bootstrap_form_a_full_mesh(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", [f"n{i}" for i in range(1, 6)])
    boot = cluster.node("n0", network=nid, **MESH)
    others = [cluster.node(f"n{i}", bootstrap=[cluster.addr("n0")], network=nid, **MESH) for i in range(1, 6)]
    nodes = [boot, *others]
    async with running(*nodes):
        await wait_mesh(nodes, timeout=90)
        a, b = others[0], others[-1]
        pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"found you")
        cluster.tuns["n1"].inject(pkt)
        with trio.fail_after(5):
            assert await cluster.tuns["n5"].delivered.receive() == pkt
        peer = a.manager.peers[b.peer_id]
        with trio.fail_after(30):  # b may have dialed a first (an inbound tunnel); a's own lookup then finds b's record
            while peer.record is None:
                await trio.sleep(0.1)
        assert peer.learned_from == "dht"
        assert peer.record.certificate == b.membership.own.raw  # type: ignore[union-attr]
        assert (peer.record.ipv4, peer.record.ipv6) == (b.membership.own.ipv4, b.membership.own.ipv6)  # type: ignore[union-attr]


async def test_a_node_that_leaves_is_dropped_after_its_ttl(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2"])
    boot = cluster.node("n0", network=nid, **FAST)
    a = cluster.node("n1", bootstrap=[cluster.addr("n0")], network=nid, **FAST)
    b = cluster.node("n2", bootstrap=[cluster.addr("n0")], network=nid, **FAST)
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
    """Without an owner: two nodes that allow each other find each other's records and resolve the clash."""
    cluster = Cluster(tmp_path)
    boot = cluster.node("n0", **FAST)
    for name in ("n1", "n2"):
        cluster.node(name)  # keys first: each allows the other
    allow = {"n1": [str(cluster.nodes["n2"].peer_id)], "n2": [str(cluster.nodes["n1"].peer_id)]}
    a = cluster.node("n1", bootstrap=[cluster.addr("n0")], allow_peers=tuple(allow["n1"]), **FAST)
    b = cluster.node("n2", bootstrap=[cluster.addr("n0")], allow_peers=tuple(allow["n2"]), **FAST)
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


async def test_only_certified_records_and_roles_count_in_an_owned_network(tmp_path: Path) -> None:
    """A stranger's self-signed record (same network ID, relay role) is refused and counted; a member's
    relay role counts only if its certificate grants it (docs/protocol.md §15.9.4)."""
    from p2pvpn.discovery.record import RelayRole
    from p2pvpn.node import Node

    cluster = Cluster(tmp_path)
    nid = cluster.owned("owner", ["m1", "m2"], roles=0)  # the owner's certificate has relay and exit; m1, m2 none
    cluster.node("stranger")
    boot = [cluster.addr("owner")]
    owner = cluster.node("owner", network=nid, relay=True, **MESH)
    m1 = cluster.node("m1", bootstrap=boot, network=nid, **MESH)
    m2 = cluster.node("m2", bootstrap=boot, network=nid, **MESH)
    m2._roles = lambda: {**Node._roles(m2), "relay": RelayRole(8, 8)}  # type: ignore[method-assign]  # claims it anyway
    stranger = cluster.node("stranger", bootstrap=boot, network=nid, relay=True, **MESH)
    assert stranger.membership is None
    async with running(owner, m1, m2, stranger):
        await wait_mesh([owner, m1, m2], timeout=60)
        assert m1.discovery is not None and m2.discovery is not None
        with trio.fail_after(30):  # the stranger's record is in the DHT (it provides "members" too): refused
            while m1.discovery.dht.validator.rejected["certificate"] < 1:
                await trio.sleep(0.2)
        assert stranger.peer_id not in m1.discovery.known and stranger.peer_id not in m1.manager.peers
        assert await m1.discovery.fetch_record(stranger.peer_id) is None
        assert m1.status([])["discovery"]["rejected_certificates"] >= 1
        # Roles as a client sees them when it looks for relays: the owner's counts, m2's does not.
        owner_record = await m1.discovery.fetch_record(owner.peer_id)
        m2_record = await m1.discovery.fetch_record(m2.peer_id)
        assert owner_record is not None and owner_record.relay is not None
        assert m2_record is not None and m2_record.relay is None and m2_record.certificate
        assert m2.discovery.own_record().relay is not None  # it did publish the role
        assert owner.manager.peers.get(stranger.peer_id) is None or owner.manager.peers[stranger.peer_id].tunnel is None


async def test_a_headless_relay_with_a_certificate_is_found_with_its_relay_role(tmp_path: Path) -> None:
    """``p2pvpn relay`` in a directory that joined the network publishes its certificate (§15.9.4)."""
    from p2pvpn import identity
    from p2pvpn.config import Config, validate
    from p2pvpn.relay_node import RelayNode
    from p2pvpn.testing.cluster import free_port
    from p2pvpn.testing.owned import make_owned_network

    cluster = Cluster(tmp_path)
    cluster.node("owner")
    cluster.node("m1")
    (tmp_path / "relay").mkdir()
    relay_key = identity.create(tmp_path / "relay" / identity.KEY_FILE)
    nid, certs = make_owned_network(tmp_path / "owner", {"m1": tmp_path / "m1", "relay": tmp_path / "relay"})
    owner = cluster.node("owner", network=nid, **MESH)
    m1 = cluster.node("m1", bootstrap=[cluster.addr("owner")], network=nid, **MESH)
    relay_cfg = validate(Config(listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",), network=nid, dht="server",
                                bootstrap=(cluster.addr("owner"),), record_ttl=30.0, discovery_interval=0.5))
    relay = RelayNode(relay_cfg, relay_key, tmp_path / "relay")
    async with running(owner, m1) as nursery:
        await nursery.start(relay.run)
        assert m1.discovery is not None
        with trio.fail_after(30):
            while (found := await m1.discovery.fetch_record(relay.peer_id)) is None:
                await trio.sleep(0.5)
        assert found.relay is not None and found.certificate == certs["relay"].raw
        assert (found.ipv4, found.ipv6) == (certs["relay"].ipv4, certs["relay"].ipv6)
        nursery.cancel_scope.cancel()
