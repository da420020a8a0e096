"""The TUN reader's direct datagram send (p2pvpn.dataplane.egress, step 3'), without a network.

Node a's TUN reader and send loop run against a real UdpLink and
DatagramSocket whose kernel socket is replaced by ``FakeSock``: it takes
``room`` sends, then says the buffer is full (BlockingIOError), as a
non-blocking UDP socket does. What a sends is opened by a real receiving
session b, so the tests read the order b's TUN would see.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections import Counter
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.dataplane import egress, offload
from p2pvpn.dataplane.egress import route_from_tun, send_to_peer
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.datagram.epochs import REKEY_AFTER_TIME, KeySchedule
from p2pvpn.datagram.session import DatagramSession
from p2pvpn.datagram.udp_socket import DatagramSocket
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.session.udp_link import UdpLink
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4
from p2pvpn.testing.superpackets import tcp_record

LOCAL, REMOTE = "100.64.0.1", "100.64.0.2"
PEER = ID(bytes.fromhex("002408011220") + bytes(32))
A_EP, B_EP = ("198.18.0.1", 4000), ("198.18.0.2", 4001)


class FakeSock:
    """The kernel's non-blocking UDP socket: ``room`` sends (a GSO sendmsg is one), then a full buffer."""

    def __init__(self, room: int = 1_000_000) -> None:
        self.room = room
        self.wire: list[bytes] = []  # datagrams in the order they left

    def _take(self) -> None:
        if self.room <= 0:
            raise BlockingIOError
        self.room -= 1

    def sendto(self, datagram: bytes, endpoint: tuple[str, int]) -> int:
        assert endpoint == B_EP
        self._take()
        self.wire.append(bytes(datagram))
        return len(datagram)

    def sendmsg(self, buffers: list[bytes], ancdata: list[tuple[int, int, bytes]], flags: int,
                endpoint: tuple[str, int]) -> int:  # fmt: skip
        assert endpoint == B_EP
        self._take()
        data = b"".join(buffers)
        size = struct.unpack("=H", ancdata[0][2])[0]
        self.wire += [data[i : i + size] for i in range(0, len(data), size)]
        return len(data)


def link_pair(a_initiator: bool = True, room: int = 1_000_000) -> tuple[UdpLink, FakeSock, DatagramSession]:
    """a's UdpLink (path ``udp`` to B_EP, epoch 1) on a fake kernel socket, and b's session for epoch 1."""
    sock = DatagramSocket()
    fake = FakeSock(room)
    sock._sock, sock.port = fake, A_EP[1]  # type: ignore[assignment]  # as open() leaves them
    link = UdpLink(sock, a_initiator, b"A" * 38, b"B" * 38, None, _no_write, lambda packets: None)
    indices = itertools.count(100)
    b = DatagramSession(KeySchedule(not a_initiator, b"B" * 38, b"A" * 38, 4001, lambda: next(indices)))
    oa, ob = link.session.keys.start(), b.keys.start()
    link.session.keys.receive_offer(ob, 0.0)
    b.keys.receive_offer(oa, 0.0)
    link.session.path.on_alive(B_EP, True, 0.0)
    assert link.usable
    return link, fake, b


async def _no_write(frame: bytes) -> None:
    raise AssertionError("the stream is not used while the datagram path is usable")


def opened(b: DatagramSession, wire: list[bytes]) -> list[bytes]:
    """What b's TUN gets from ``wire``, in order (epoch 1)."""
    assert b.keys.current is not None
    return b.receive_batch(b.keys.current, wire, A_EP, 0.0).packets


def peer_with(link: UdpLink, queue: PacketQueue | None = None) -> Peer:
    peer = Peer(peer_id=PEER, addresses=addressing.derive(PEER.to_bytes(), "default"), queue=queue or PacketQueue(64))
    peer.tunnel = SimpleNamespace(link=link, too_big=None)  # type: ignore[assignment]  # the active tunnel, as egress sees it
    return peer


def routes() -> RouteTable[ID]:
    table: RouteTable[ID] = RouteTable()
    table.set_peer(PEER, [ipaddress.IPv4Address(REMOTE).packed])
    return table


def packet(i: int) -> bytes:
    return udp4(LOCAL, REMOTE, i.to_bytes(2, "big") * 20)


async def read_tun(tun: MemoryTun, peer: Peer, *packets: bytes) -> Counter[str]:
    """The TUN reader (steps 1-3') over ``packets``, one TUN batch, until it waits for more."""
    drops: Counter[str] = Counter()
    for p in packets:
        tun.inject(p)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(route_from_tun, tun, routes(), {PEER: peer}, drops)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return drops


async def test_a_packet_for_an_idle_queue_is_sealed_and_sent_by_the_tun_reader() -> None:
    link, fake, b = link_pair()
    peer = peer_with(link)
    drops = await read_tun(MemoryTun(), peer, packet(0), packet(1), packet(2))
    assert opened(b, fake.wire) == [packet(0), packet(1), packet(2)]
    assert len(peer.queue) == 0 and peer.queue.idle and not drops
    assert peer.stats.packets_out == 3 and peer.stats.bytes_out == 3 * len(packet(0))
    assert (link.direct_packets, link.direct_fallbacks) == (3, 0)
    assert link.describe()["udp_direct_packets"] == 3
    assert link.sock.sends == 1  # one read's packets of one size: one GSO sendmsg, as from the send loop


async def test_nothing_goes_direct_while_packets_wait_or_a_batch_is_out() -> None:
    link, fake, b = link_pair()
    peer = peer_with(link)
    tun = MemoryTun()
    peer.queue.put(packet(0))                       # queued before: p1 must go behind it
    await read_tun(tun, peer, packet(1))
    assert fake.wire == [] and len(peer.queue) == 2
    batch = await peer.queue.get_batch(1 << 16)     # the send loop took both, and is still sending them
    assert batch == [packet(0), packet(1)] and len(peer.queue) == 0 and not peer.queue.idle
    await read_tun(tun, peer, packet(2))
    assert fake.wire == [] and len(peer.queue) == 1
    peer.queue.done()                               # sent; p2 still waits, so p3 goes behind it
    await read_tun(tun, peer, packet(3))
    assert fake.wire == [] and len(peer.queue) == 2
    assert await peer.queue.get_batch(1 << 16) == [packet(2), packet(3)]
    peer.queue.done()
    await read_tun(tun, peer, packet(4))            # idle at last
    assert opened(b, fake.wire) == [packet(4)] and link.direct_packets == 1


async def test_no_direct_send_without_a_usable_path_or_with_the_switch_off(monkeypatch: Any) -> None:
    link, fake, _ = link_pair()
    peer = peer_with(link)
    link.session.path.poll(100.0)                   # nothing came back for PATH_TIMEOUT: back to the stream
    assert not link.usable
    await read_tun(MemoryTun(), peer, packet(0))
    assert fake.wire == [] and len(peer.queue) == 1
    link, fake, _ = link_pair()
    peer = peer_with(link)
    monkeypatch.setattr(egress, "DIRECT_SEND", False)  # bench/latency.py --no-direct
    await read_tun(MemoryTun(), peer, packet(0))
    assert fake.wire == [] and len(peer.queue) == 1


async def test_a_full_buffer_sends_the_rest_through_the_queue_in_order_and_counts_it() -> None:
    link, fake, b = link_pair(room=2)
    link.sock.gso = False                           # one sendto per datagram: the buffer fills mid-read
    peer = peer_with(link)
    tun = MemoryTun()
    drops = await read_tun(tun, peer, *(packet(i) for i in range(6)))
    # p0 and p1 went direct; p2 found the buffer full: p2-p5 were queued, in order.
    assert opened(b, fake.wire) == [packet(0), packet(1)]
    assert (link.direct_packets, link.direct_fallbacks) == (2, 4)
    assert len(peer.queue) == 4 and not drops
    fake.room = 1_000_000
    gate = trio.Event()
    send_packets = link.send_packets

    async def gated(packets: list[bytes]) -> None:
        await gate.wait()                           # a send loop slowed down mid-batch (a full buffer)
        await send_packets(packets)

    link.send_packets = gated  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_to_peer, peer, _no_write, False, False, 0.0, None, link)
        nursery.start_soon(route_from_tun, tun, routes(), {PEER: peer}, drops)
        await trio.testing.wait_all_tasks_blocked()
        assert len(peer.queue) == 0 and not peer.queue.idle  # p2-p5 are out with the send loop
        tun.inject(packet(6))
        await trio.testing.wait_all_tasks_blocked()
        assert len(peer.queue) == 1                 # p6 waits: sent now, it would overtake p2-p5
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        tun.inject(packet(7))                       # the queue is idle again: direct
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert opened(b, fake.wire[2:]) == [packet(i) for i in range(2, 8)]  # b opened p0 and p1 already
    assert (link.direct_packets, link.direct_fallbacks) == (3, 4)
    assert peer.stats.packets_out == 8 and link.sock.drops["udp_send_eagain"] == 0 and not drops
    assert link.session.tx_packets == len(fake.wire) == 8  # p2-p5 were sealed twice, counted once


async def test_a_record_sent_in_part_queues_its_other_segments_in_order() -> None:
    link, fake, b = link_pair(room=2)
    link.sock.gso = False                           # one sendto per datagram: the buffer fills mid-record
    peer = peer_with(link)
    tun = MemoryTun(offload=True)
    record = tcp_record(LOCAL, REMOTE, bytes(range(250)) * 20, gso_size=1000)
    segments = offload.segment(record)
    assert segments is not None and len(segments) == 5
    await read_tun(tun, peer, record)
    assert opened(b, fake.wire) == segments[:2]
    assert link.direct_fallbacks == 3 and len(peer.queue) == 3
    fake.room = 1_000_000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_to_peer, peer, _no_write, True, False, 0.0, None, link)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert opened(b, fake.wire[2:]) == segments[2:]
    assert peer.stats.packets_out == 5 and peer.stats.bytes_out == sum(map(len, segments))


async def test_a_packet_over_the_mtu_is_dropped_counted_and_answered_as_by_the_send_loop() -> None:
    link, fake, b = link_pair()
    peer = peer_with(link)
    told: list[int] = []
    peer.tunnel.too_big = lambda p, mtu: told.append(mtu)  # type: ignore[union-attr]  # ICMP, in the node
    peer.mtu = 100
    big = udp4(LOCAL, REMOTE, bytes(200))           # DF set: not fragmented, so too big
    small = udp4(LOCAL, REMOTE, bytes(20))
    await read_tun(MemoryTun(), peer, small, big, small)
    assert told == [100] and peer.stats.drops["too_big"] == 1
    assert opened(b, fake.wire) == [small, small] and len(peer.queue) == 0


async def test_direct_sends_during_a_rekey_are_held_by_the_receiver_then_opened_in_order() -> None:
    """§16.6: b (initiator) offers epoch 2; a installs it at once and its TUN reader seals with it;
    b's socket holds those datagrams until b has a's answer, then opens them in order."""
    link, fake, b = link_pair(a_initiator=False)
    b_sock = DatagramSocket()
    got: list[bytes] = []
    assert b.keys.current is not None
    b_sock.register(b, b.keys.current, got.extend)
    now = REKEY_AFTER_TIME + 1
    offer = b.keys.rekey_due(now)
    assert offer is not None
    b_sock.pending(offer.receiver_index, b)
    installed = link.session.keys.receive_offer(offer, now)
    assert installed.reply is not None and installed.epoch is link.session.keys.current
    peer = peer_with(link)
    await read_tun(MemoryTun(), peer, packet(0), packet(1), packet(2))
    assert link.direct_packets == 3
    b_sock._handle([(d, 0, B_EP) for d in fake.wire], now)
    assert got == [] and b_sock.held == 3
    epoch2 = b.keys.receive_offer(installed.reply, now + 0.05).epoch
    assert epoch2 is not None
    b_sock.register(b, epoch2, got.extend, now + 0.05)
    assert got == [packet(0), packet(1), packet(2)]
    assert b_sock.drops["udp_unknown_index"] == 0


def test_send_now_stops_at_a_full_buffer_and_counts_nothing() -> None:
    sock = DatagramSocket()
    fake = FakeSock(room=1)
    sock._sock = fake  # type: ignore[assignment]
    sock.gso = False
    assert sock.send_now(B_EP, [b"x" * 40, b"y" * 40, b"z" * 40]) == 1
    assert fake.wire == [b"x" * 40] and not sock.drops
    sock.gso, fake.room = True, 1
    assert sock.send_now(B_EP, [b"a" * 40, b"b" * 40, b"c" * 30]) == 3  # one GSO run, one syscall
    assert sock.send_now(B_EP, [b"d" * 40]) == 0 and not sock.drops


async def test_the_queue_is_idle_only_with_nothing_queued_and_no_batch_out() -> None:
    queue = PacketQueue(4)
    assert queue.idle
    queue.put(b"p")
    assert not queue.idle
    batch = await queue.get_batch(100)
    assert len(queue) == 0 and not queue.idle       # out with a sender
    queue.requeue(batch)                            # its tunnel went away before the write
    queue.done()
    assert not queue.idle and len(queue) == 1
    await queue.get_batch(100)
    queue.done()
    assert queue.idle
    queue.done()                                    # a stray done() never makes it "more" idle
    queue.put(b"q")
    await queue.get_batch(100)
    assert not queue.idle
