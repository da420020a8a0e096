"""The ingress destination check: only packets for us, or for a route we serve, reach the TUN."""

from __future__ import annotations

import ipaddress

import trio
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.dataplane.destinations import LocalDestinations
from p2pvpn.dataplane.ingress import receive_from_peer
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4, udp6
from p2pvpn.wire.codec import Data, Frame, FrameDecoder, encode

OURS = addressing.derive(b"\x00\x24ours", "default")
THEIRS = addressing.derive(b"\x00\x24theirs", "default")
OTHER = addressing.derive(b"\x00\x24someone-else", "default")


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def test_a_member_reaches_only_our_own_addresses() -> None:
    check = LocalDestinations(OURS, "default")
    assert check.allowed(OURS.ipv4.packed) and check.allowed(OURS.ipv6.packed)
    for other in (OTHER.ipv4.packed, OTHER.ipv6.packed, packed("192.168.1.1"), packed("198.18.0.1"),
                  packed("127.0.0.1"), packed("224.0.0.251"), packed("203.0.113.7"), packed("2001:db8::1")):
        assert not check.allowed(other)


def test_an_exit_also_serves_everything_outside_the_overlay() -> None:
    check = LocalDestinations(OURS, "default", exit_role=True)
    assert check.allowed(packed("203.0.113.7")) and check.allowed(packed("2001:db8::1"))
    assert check.allowed(packed("192.168.1.1"))  # reaches the exit's nft policy, which denies it
    assert not check.allowed(OTHER.ipv4.packed) and not check.allowed(OTHER.ipv6.packed)
    assert not check.allowed(packed("100.127.255.255"))
    assert check.allowed(packed("100.128.0.1"))  # just outside 100.64.0.0/10


def test_our_address_moves() -> None:
    check = LocalDestinations(OURS, "default")
    moved = addressing.derive(b"\x00\x24ours", "default", OURS.index + 1)
    check.set_local(moved)
    assert check.allowed(moved.ipv4.packed) and not check.allowed(OURS.ipv4.packed)


class FakeStream:
    def __init__(self, wire: bytes) -> None:
        self._chunks = [wire, b""]

    async def read(self, n: int) -> bytes:
        return self._chunks.pop(0)


async def test_ingress_counts_bad_destinations() -> None:
    peer_id = ID(b"\x00\x24theirs")
    peer = Peer(peer_id=peer_id, addresses=THEIRS, queue=PacketQueue(64))
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(peer_id, (THEIRS.ipv4.packed, THEIRS.ipv6.packed))
    tun = MemoryTun()
    good4 = udp4(str(THEIRS.ipv4), str(OURS.ipv4), b"to us")
    good6 = udp6(str(THEIRS.ipv6), str(OURS.ipv6), b"to us")
    packets = (udp4(str(THEIRS.ipv4), "192.168.1.1", b"our LAN"), good4,
               udp4(str(THEIRS.ipv4), str(OTHER.ipv4), b"another member"), good6)

    async def on_control(frame: Frame) -> None:
        raise AssertionError(frame)

    stream = FakeStream(encode(Data(packets=packets)))
    await receive_from_peer(stream, FrameDecoder(), peer, routes, tun, on_control,  # type: ignore[arg-type]
                            destination_ok=LocalDestinations(OURS, "default").allowed)
    got = []
    while True:
        try:
            got.append(tun.delivered.receive_nowait())
        except trio.WouldBlock:
            break
    assert got == [good4, good6]
    assert peer.stats.drops == {"bad_destination": 2}
