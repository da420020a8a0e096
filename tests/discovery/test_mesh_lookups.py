"""A full-mesh node reaches an on-demand member, which provides no "members" key (docs/protocol.md §12.2).

The gate (rules.MissGate) sans-IO; the hook (discovery.mesh_lookups) with a
resolve stand-in on trio's clock; then real nodes: an owned network whose
full-mesh node learns an on-demand member from its first packets' address
lookup and delivers the next packet.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import trio

from p2pvpn.stats import DropReason
from p2pvpn.discovery.mesh_lookups import MeshLookups
from p2pvpn.discovery.rules import MissGate
from p2pvpn.testing.cluster import Cluster, running
from p2pvpn.testing.packets import udp4

A, B, C = (ipaddress.ip_address(f"100.64.0.{i}").packed for i in (1, 2, 3))


def test_the_gate_runs_one_lookup_per_destination_bounded_and_waits_after_nothing_found() -> None:
    gate = MissGate(limit=2, negative_ttl=5.0)
    assert gate.start(A, 0.0)
    assert not gate.start(A, 0.1)  # already running
    assert gate.start(B, 0.1)
    assert not gate.start(C, 0.2)  # two at once, at most
    gate.ended(A, 1.0, found=False)
    assert gate.start(C, 1.0)
    assert not gate.start(A, 5.9)  # found nothing 4.9 s ago (and two are running anyway)
    gate.ended(B, 2.0, found=True)
    assert not gate.start(A, 5.9)  # a slot is free now, but still the negative time
    assert gate.start(A, 6.0)
    gate.ended(A, 6.5, found=True)
    assert gate.start(A, 6.6)  # found: no waiting


def test_the_gate_forgets_the_oldest_failures_past_its_bound() -> None:
    gate = MissGate(limit=1, negative_ttl=100.0)
    for i in range(200):
        dest = i.to_bytes(4, "big")
        assert gate.start(dest, float(i))
        gate.ended(dest, float(i), found=False)
    assert len(gate.failed) == 64
    assert gate.start((0).to_bytes(4, "big"), 200.0)  # forgotten: asked again
    assert not gate.start((199).to_bytes(4, "big"), 200.0)


async def test_a_flood_to_one_unknown_address_starts_one_lookup(autojump_clock: object) -> None:
    asked: list[object] = []

    async def resolve(address: object, trace: object) -> None:
        asked.append(address)
        await trio.sleep(1.0)  # nothing found, after a while

    hook = MeshLookups(lambda d: d[0] == 100, resolve)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(hook.run)
        assert not hook.miss(ipaddress.ip_address("10.0.0.1").packed, b"")  # outside the overlay: no lookup
        for _ in range(50):
            assert not hook.miss(A, b"")  # never taken: the TUN reader drops and counts it
        await trio.sleep(1.5)
        assert hook.miss(A, b"") is False and hook.counts["refused"] == 50  # 49 while running, 1 negative
        nursery.cancel_scope.cancel()
    assert asked == [ipaddress.ip_address(A)]
    assert hook.counts == {"started": 1, "found": 0, "missing": 1, "refused": 50}


async def test_a_full_mesh_node_reaches_an_on_demand_member_by_its_address(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2"])
    common = {"record_ttl": 60.0, "discovery_interval": 0.5}
    boot = cluster.node("n0", network=nid, **common)
    mesh = cluster.node("n1", bootstrap=[cluster.addr("n0")], network=nid, **common)
    member = cluster.node("n2", bootstrap=[cluster.addr("n0")], network=nid, on_demand=True, idle_timeout=30.0,
                          **common)
    async with running(boot, mesh, member):
        with trio.fail_after(30):
            while any(n.discovery is None or not n.discovery.last_published for n in (boot, mesh, member)):
                await trio.sleep(0.05)
        assert mesh.discovery is not None and mesh.mesh_lookups is not None and mesh.manager is not None
        providers = {p.peer_id for p in await mesh.discovery.dht.find_providers("members")}
        assert member.peer_id not in providers and mesh.peer_id in providers  # the rule of §12.2
        assert member.peer_id not in mesh.manager.peers  # the full-mesh node cannot know n2 from "members"
        packet = udp4(str(mesh.addresses.ipv4), str(member.addresses.ipv4), b"mesh to on-demand")
        delivered = None
        with trio.move_on_after(30):
            for _ in range(60):  # as a sender retries: a packet every 0.5 s until one arrives
                cluster.tuns["n1"].inject(packet)
                with trio.move_on_after(0.5):
                    delivered = await cluster.tuns["n2"].delivered.receive()
                if delivered is not None:
                    break
        assert delivered == packet
        assert mesh.mesh_lookups.counts["found"] == 1 and mesh.mesh_lookups.counts["started"] == 1
        assert mesh.manager.peers[member.peer_id].learned_from == "lookup"
        assert mesh.manager.drops[DropReason.NO_ROUTE] >= 1  # the packets before the route: dropped, counted
        assert mesh.status()["mesh_lookups"]["found"] == 1
