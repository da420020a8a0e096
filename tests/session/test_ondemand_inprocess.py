"""On-demand tunnels with real libp2p hosts, a real DHT and in-memory TUNs (docs/protocol.md §18).

Story: in an owned network every node runs with ``on_demand``; n1 lists n3 as a
static peer. No tunnel to n2 exists until n1 sends it a packet; the packets sent
before the tunnel is up wait and arrive in order; the tunnel closes on both sides
after the (short) idle timeout while the static tunnel stays; the next packet
reopens it. An on-demand member announces itself as no "members" provider
(docs/protocol.md §12.2): it is found by its address record alone.
"""

from __future__ import annotations

from pathlib import Path

import trio

from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4

IDLE = 2.0
SETTINGS = {"record_ttl": 60.0, "discovery_interval": 0.5, "on_demand": True, "idle_timeout": IDLE}


def _tunnel(node: Node, peer: Node) -> object | None:
    assert node.manager is not None
    p = node.manager.peers.get(peer.peer_id)
    return p.tunnel if p is not None else None


async def _published(node: Node, timeout: float = 30) -> None:
    """Until the node has published its record (address keys included)."""
    with trio.fail_after(timeout):
        while node.discovery is None or not node.discovery.last_published:
            await trio.sleep(0.05)


async def _receive(cluster: Cluster, name: str, timeout: float = 10) -> bytes:
    with trio.fail_after(timeout):
        return await cluster.tuns[name].delivered.receive()


async def test_tunnel_opens_on_first_packet_and_closes_when_idle(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2", "n3"])
    boot = cluster.node("n0", network=nid, **SETTINGS)
    n3 = cluster.node("n3", bootstrap=[cluster.addr("n0")], network=nid, **SETTINGS)
    n1 = cluster.node("n1", peers=[cluster.addr("n3")], bootstrap=[cluster.addr("n0")], network=nid, **SETTINGS)
    n2 = cluster.node("n2", bootstrap=[cluster.addr("n0")], network=nid, **SETTINGS)
    async with running(boot, n3, n1, n2):
        await wait_up(n1, n3, timeout=20)  # the static peer is dialed at once
        for node in (boot, n1, n2, n3):
            await _published(node)
        await trio.sleep(1.5)  # several discovery rounds: still no tunnel to n2
        assert _tunnel(n1, n2) is None and _tunnel(n2, n1) is None
        assert n1.manager is not None and n1.manager.demand is not None

        packets = [udp4(str(n1.addresses.ipv4), str(n2.addresses.ipv4), f"first {i}".encode()) for i in range(3)]
        started = trio.current_time()
        for packet in packets:
            cluster.tuns["n1"].inject(packet)
        received = [await _receive(cluster, "n2") for _ in packets]
        reached = trio.current_time() - started
        assert received == packets  # the queued packets, all of them, in order
        assert n1.manager.demand.pending.lookups == 1
        assert n1.manager.demand.describe()["drops"] == {}
        print(f"first packet to delivery: {reached:.2f} s")

        # Idle: both sides close (Close IDLE from the opener), the static tunnel stays.
        with trio.fail_after(4 * IDLE + 5):
            while _tunnel(n1, n2) is not None or _tunnel(n2, n1) is not None:
                await trio.sleep(0.05)
        assert _tunnel(n1, n3) is not None
        assert n1.manager.peers[n2.peer_id].last_error.startswith("idle")
        await trio.sleep(IDLE * 1.5)
        assert _tunnel(n1, n3) is not None  # never idled: static
        assert _tunnel(n1, n2) is None  # no flapping: nobody reopened without traffic

        # Traffic from the other side reopens (n2 learned n1 from the inbound tunnel or looks it up).
        back = udp4(str(n2.addresses.ipv4), str(n1.addresses.ipv4), b"reopen")
        cluster.tuns["n2"].inject(back)
        assert await _receive(cluster, "n1") == back


async def test_a_member_that_is_no_provider_is_reached_by_its_address_record(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2"])
    mesh = {k: v for k, v in SETTINGS.items() if k not in ("on_demand", "idle_timeout")}
    boot = cluster.node("n0", network=nid, **mesh)  # full mesh: it provides "members" (rules.provided_roles)
    n1 = cluster.node("n1", bootstrap=[cluster.addr("n0")], network=nid, **SETTINGS)
    hidden = cluster.node("n2", bootstrap=[cluster.addr("n0")], network=nid, **SETTINGS)
    async with running(boot, n1, hidden):
        for node in (boot, n1, hidden):
            await _published(node)
        assert n1.discovery is not None
        providers = await n1.discovery.dht.find_providers("members")
        assert hidden.peer_id not in {p.peer_id for p in providers}  # on demand: no "members" provide
        assert boot.peer_id in {p.peer_id for p in providers}  # the key works; n2 is just not on it
        packet = udp4(str(n1.addresses.ipv4), str(hidden.addresses.ipv4), b"by address")
        cluster.tuns["n1"].inject(packet)
        assert await _receive(cluster, "n2") == packet
        assert n1.discovery.address_lookups["found"] == 1
        assert n1.manager is not None and n1.manager.peers[hidden.peer_id].learned_from == "lookup"

        # An overlay address nobody holds: the packet is dropped, counted, and answered with ICMP unreachable.
        nobody = udp4(str(n1.addresses.ipv4), "100.64.0.7", b"nobody")
        cluster.tuns["n1"].inject(nobody)
        reply = await _receive(cluster, "n1", timeout=15)
        assert reply[9] == 1 and reply[20] == 3 and reply[21] == 1  # ICMP, destination unreachable, host
        assert n1.manager.demand is not None and n1.manager.demand.drops["unreachable"] == 1
