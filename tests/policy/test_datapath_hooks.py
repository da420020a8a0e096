"""The policy's hooks in the data path: ingress drops and counts denied packets, egress opens flows."""

from __future__ import annotations

from collections import Counter

import trio
from libp2p.peer.id import ID

from p2pvpn.addressing import OverlayAddresses
from p2pvpn.dataplane.egress import route_from_tun
from p2pvpn.dataplane.ingress import POLICY_DENIED, datagram_receiver
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import Action, Policy, Proto, Rule, Selector
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.testing.memtun import MemoryTun
from policy.packets import ACK, SYN, tcp

NID = "tgegoektrvlu43fcqzq352hc4a5usevm"
US, THEM = "100.64.0.2", "100.64.0.1"
PEER = ID(bytes.fromhex("002408011220") + bytes(range(32)))


def setup(policy: Policy) -> tuple[Firewall, Peer, RouteTable[ID], MemoryTun]:
    fw = Firewall(policy, b"me", (), lambda peer: ("A",) if peer == PEER.to_bytes() else ())
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(PEER, [bytes([100, 64, 0, 1])])
    peer = Peer(PEER, OverlayAddresses(None, None, 0), PacketQueue(64))  # type: ignore[arg-type]
    return fw, peer, routes, MemoryTun(mtu=1500)


def delivered(tun: MemoryTun) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(tun.delivered.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_ingress_drops_what_the_policy_denies_and_counts_it_per_peer() -> None:
    fw, peer, routes, tun = setup(Policy(NID, 1, Action.ALLOW, (
        Rule(Action.DENY, Selector(group="A"), Selector(), Proto.TCP, (22, 22)),), b"", None, b"x"))
    deliver = datagram_receiver(peer, routes, tun, None, fw)
    ssh, web = tcp(THEM, US, 40000, 22, SYN), tcp(THEM, US, 40001, 80, SYN)
    deliver([ssh, web, ssh])
    assert delivered(tun) == [web]
    assert peer.stats.drops[POLICY_DENIED] == 2 and fw.denied == {"rule": 2}
    assert peer.stats.packets_in == 1


async def test_egress_opens_flows_so_replies_pass_under_default_deny() -> None:
    fw, peer, routes, tun = setup(Policy(NID, 1, Action.DENY, (), b"", None, b"x"))
    deliver = datagram_receiver(peer, routes, tun, None, fw)
    reply = tcp(THEM, US, 443, 50000, SYN | ACK)
    deliver([reply])
    assert delivered(tun) == [] and peer.stats.drops[POLICY_DENIED] == 1
    tun.inject(tcp(US, THEM, 50000, 443, SYN))  # our own SYN, read from the TUN and routed to the peer
    async with trio.open_nursery() as nursery:
        nursery.start_soon(route_from_tun, tun, routes, {PEER: peer}, Counter(), fw)
        with trio.fail_after(5):
            while not len(peer.queue):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    deliver([reply])
    assert delivered(tun) == [reply]
