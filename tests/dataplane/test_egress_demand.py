"""The TUN reader's on-demand hook (p2pvpn.dataplane.egress.Demand) and the overlay test it relies on."""

from __future__ import annotations

import ipaddress
from collections import Counter

import trio
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.dataplane.egress import route_from_tun
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4

LOCAL, KNOWN, UNKNOWN, OUTSIDE = "100.64.0.1", "100.64.0.2", "100.64.0.3", "192.0.2.9"
PEER = ID(bytes.fromhex("002408011220") + bytes(32))


class RecordingDemand:
    def __init__(self, routes: RouteTable[ID]) -> None:
        self.routes = routes
        self.missed: list[bytes] = []
        self.woken: list[Peer] = []

    def miss(self, destination: bytes, packet: bytes) -> bool:
        if not self.routes.in_overlay(destination):
            return False
        self.missed.append(destination)
        return True

    def wake(self, peer: Peer) -> None:
        self.woken.append(peer)


async def _run(demand: RecordingDemand | None) -> tuple[Counter[str], Peer]:
    tun = MemoryTun()
    routes: RouteTable[ID] = RouteTable()
    peer = Peer(peer_id=PEER, addresses=addressing.derive(PEER.to_bytes(), "default"), queue=PacketQueue(16))
    routes.set_peer(PEER, [ipaddress.IPv4Address(KNOWN).packed])
    drops: Counter[str] = Counter()
    if demand is not None:
        demand.routes = routes
    for dst in (KNOWN, UNKNOWN, OUTSIDE):
        tun.inject(udp4(LOCAL, dst, b"x"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(route_from_tun, tun, routes, {PEER: peer}, drops, None, demand)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return drops, peer


async def test_without_demand_unknown_destinations_are_no_route() -> None:
    drops, peer = await _run(None)
    assert drops["no_route"] == 2 and len(peer.queue) == 1


async def test_with_demand_an_unknown_overlay_address_is_missed_and_a_tunnelless_peer_woken() -> None:
    demand = RecordingDemand(RouteTable())
    drops, peer = await _run(demand)
    assert demand.missed == [ipaddress.IPv4Address(UNKNOWN).packed]
    assert drops["no_route"] == 1  # the address outside the overlay, without an exit
    assert demand.woken == [peer] and len(peer.queue) == 1


def test_in_overlay_knows_v4_always_and_v6_once_told() -> None:
    routes: RouteTable[str] = RouteTable()
    assert routes.in_overlay(ipaddress.IPv4Address("100.127.255.255").packed)
    assert not routes.in_overlay(ipaddress.IPv4Address("100.128.0.0").packed)
    v6 = ipaddress.IPv6Address("fd12:3456:789a:0:1::2").packed
    assert not routes.in_overlay(v6)
    routes.set_v6_overlay(v6[:8])
    assert routes.in_overlay(v6) and not routes.in_overlay(ipaddress.IPv6Address("fd00::1").packed)
    routes.set_default(None)  # an exit going away keeps the overlay's prefix
    assert routes.in_overlay(v6)
