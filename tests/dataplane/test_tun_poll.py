"""Egress step 1': what the kernel answers inside our TUN writes leaves in the same wake-up (route_ready).

Two real UDP sockets on loopback carry the datagram path between a and b.
b's TUN is an in-memory one that answers a "ping" the way the kernel
answers an ICMP echo: inside the write itself, by queueing the reply on
the TUN. b runs no TUN reader task at all, so a reply that reaches a can
only have been read by b's datagram receive task right after its write.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from types import SimpleNamespace

import pytest
import trio
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.dataplane import egress
from p2pvpn.dataplane.egress import route_ready
from p2pvpn.dataplane.ingress import datagram_receiver
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.datagram.udp_socket import DatagramSocket
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.session.udp_link import UdpLink
from p2pvpn.stats import DropReason
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4

A_OVERLAY, B_OVERLAY = "100.64.0.1", "100.64.0.2"
PEER_A = ID(bytes.fromhex("002408011220") + bytes(31) + b"\x01")
PEER_B = ID(bytes.fromhex("002408011220") + bytes(31) + b"\x02")


class AnsweringTun(MemoryTun):
    """A TUN whose "kernel" answers each ping inside the write, as Linux answers an ICMP echo."""

    answer = b"pong"

    def write(self, packet: bytes) -> bool:
        ok = super().write(packet)
        if packet.endswith(b"ping"):
            self.inject(udp4(B_OVERLAY, A_OVERLAY, self.answer, sport=5000, dport=4000))
        return ok


def peer_over(link: UdpLink, peer_id: ID) -> Peer:
    peer = Peer(peer_id=peer_id, addresses=addressing.derive(peer_id.to_bytes(), "default"), queue=PacketQueue(64))
    peer.tunnel = SimpleNamespace(link=link, too_big=None)  # type: ignore[assignment]  # as egress sees it
    return peer


def routes_to(peer_id: ID, overlay: str) -> RouteTable[ID]:
    table: RouteTable[ID] = RouteTable()
    table.set_peer(peer_id, [ipaddress.IPv4Address(overlay).packed])
    return table


async def keyed_links(sa: DatagramSocket, sb: DatagramSocket, deliver_a, deliver_b) -> tuple[UdpLink, UdpLink]:  # type: ignore[no-untyped-def]
    """a and b with epoch 1 installed and registered on their sockets, path ``udp`` both ways."""
    a = UdpLink(sa, True, PEER_A.to_bytes(), PEER_B.to_bytes(), None, _no_write, deliver_a)
    b = UdpLink(sb, False, PEER_B.to_bytes(), PEER_A.to_bytes(), None, _no_write, deliver_b)
    now = trio.current_time()
    oa, ob = a.session.keys.start(), b.session.keys.start()
    for link, offer in ((a, ob), (b, oa)):
        installed = link.session.keys.receive_offer(offer, now)
        assert installed.epoch is not None
        link._register(installed.epoch, now)
    a.session.path.on_alive(("127.0.0.1", sb.port), True, now)
    b.session.path.on_alive(("127.0.0.1", sa.port), True, now)
    assert a.usable and b.usable
    return a, b


async def _no_write(frame: bytes) -> None:
    raise AssertionError("the stream is not used while the datagram path is usable")


@pytest.mark.parametrize("poll", [True, False])
async def test_the_answer_to_a_received_packet_leaves_from_the_receive_wakeup(
    poll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress, "TUN_POLL", poll)
    sa, sb = DatagramSocket("127.0.0.1", 0), DatagramSocket("127.0.0.1", 0)
    await sa.open()
    await sb.open()
    tun_b = AnsweringTun()
    got_a: list[bytes] = []
    a_heard = trio.Event()

    def deliver_a(packets: list[bytes]) -> None:
        got_a.extend(packets)
        a_heard.set()

    routes_b = routes_to(PEER_A, A_OVERLAY)
    peer_a_at_b = Peer(peer_id=PEER_A, addresses=addressing.derive(PEER_A.to_bytes(), "default"),
                       queue=PacketQueue(64))  # fmt: skip
    deliver_b = datagram_receiver(peer_a_at_b, routes_b, tun_b)
    link_a, link_b = await keyed_links(sa, sb, deliver_a, deliver_b)
    peer_a_at_b.tunnel = SimpleNamespace(link=link_b, too_big=None)  # type: ignore[assignment]
    drops_b: Counter[str] = Counter()
    sb.after_delivery = lambda n: route_ready(tun_b, routes_b, {PEER_A: peer_a_at_b}, drops_b, delivered=n)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sa.run)
            await nursery.start(sb.run)  # and no TUN reader task for b
            assert link_a.send_now([udp4(A_OVERLAY, B_OVERLAY, b"ping")]) == 1
            with trio.fail_after(5):
                assert await tun_b.delivered.receive() == udp4(A_OVERLAY, B_OVERLAY, b"ping")
            if poll:
                with trio.fail_after(5):
                    await a_heard.wait()
                assert got_a == [udp4(B_OVERLAY, A_OVERLAY, b"pong", sport=5000, dport=4000)]
                assert tun_b.read_now(8) == []  # taken from the TUN, not left for a reader
                assert link_b.direct_packets == 1 and not drops_b
            else:
                await trio.sleep(0.2)
                assert got_a == []
                assert tun_b.read_now(8) == [udp4(B_OVERLAY, A_OVERLAY, b"pong", sport=5000, dport=4000)]
            nursery.cancel_scope.cancel()
    finally:
        sa.close()
        sb.close()


async def test_a_bulk_sized_answer_is_queued_for_the_send_loop_not_sent_from_the_receive_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the kernel releases inside a write that is not a small answer (a sender's next TSO record) waits
    for the send loop, which takes it in frames; the receive task sends only small answers itself."""
    monkeypatch.setattr(egress, "TUN_POLL", True)
    sa, sb = DatagramSocket("127.0.0.1", 0), DatagramSocket("127.0.0.1", 0)
    await sa.open()
    await sb.open()
    tun_b = AnsweringTun()
    tun_b.answer = bytes(egress.TUN_POLL_DIRECT_BYTES)
    routes_b = routes_to(PEER_A, A_OVERLAY)
    peer_a_at_b = Peer(peer_id=PEER_A, addresses=addressing.derive(PEER_A.to_bytes(), "default"),
                       queue=PacketQueue(64))  # fmt: skip
    link_a, link_b = await keyed_links(sa, sb, lambda packets: None, datagram_receiver(peer_a_at_b, routes_b, tun_b))
    peer_a_at_b.tunnel = SimpleNamespace(link=link_b, too_big=None)  # type: ignore[assignment]
    sb.after_delivery = lambda n: route_ready(tun_b, routes_b, {PEER_A: peer_a_at_b}, Counter(), delivered=n)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sb.run)
            assert link_a.send_now([udp4(A_OVERLAY, B_OVERLAY, b"ping")]) == 1
            with trio.fail_after(5):
                await tun_b.delivered.receive()
                while not len(peer_a_at_b.queue):
                    await trio.sleep(0.01)
            assert link_b.direct_packets == 0 and tun_b.read_now(8) == []
            nursery.cancel_scope.cancel()
    finally:
        sa.close()
        sb.close()


async def test_a_batch_that_delivered_nothing_reads_nothing() -> None:
    """A forged or short datagram opens nothing: no TUN read after it (the hook runs only after a delivery)."""
    sock = DatagramSocket("127.0.0.1", 0)
    await sock.open()
    calls: list[int] = []
    sock.after_delivery = calls.append
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sock.run)
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sender:
                await sender.sendto(b"\x01" + bytes(40), ("127.0.0.1", sock.port))  # an unknown index
                await sender.sendto(b"x", ("127.0.0.1", sock.port))  # too short
            with trio.fail_after(5):
                while sock.drops["udp_short"] + sock.drops["udp_unknown_index"] < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    finally:
        sock.close()
    assert calls == []


def test_route_ready_routes_what_the_tun_holds_in_order_and_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "TUN_POLL", True)
    tun = MemoryTun()
    queue = PacketQueue(64)
    peer = Peer(peer_id=PEER_B, addresses=addressing.derive(PEER_B.to_bytes(), "default"), queue=queue)
    drops: Counter[str] = Counter()
    routes = routes_to(PEER_B, B_OVERLAY)
    route_ready(tun, routes, {PEER_B: peer}, drops)  # an empty TUN: nothing, no wait
    assert queue.idle and not drops
    packets = [udp4(A_OVERLAY, B_OVERLAY, bytes([i]) * 30) for i in range(3)]
    stray = udp4(A_OVERLAY, "100.64.9.9", b"nowhere")
    for p in (packets[0], stray, *packets[1:]):
        tun.inject(p)
    route_ready(tun, routes, {PEER_B: peer}, drops)  # no tunnel: queued in order (step 3), the stray counted
    assert drops == Counter({DropReason.NO_ROUTE: 1})
    assert tun.read_now(8) == []
    assert queue.drain() == packets


def test_route_ready_is_off_with_its_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "TUN_POLL", False)  # the default
    tun = MemoryTun()
    queue = PacketQueue(64)
    peer = Peer(peer_id=PEER_B, addresses=addressing.derive(PEER_B.to_bytes(), "default"), queue=queue)
    tun.inject(udp4(A_OVERLAY, B_OVERLAY, b"left for the reader"))
    route_ready(tun, routes_to(PEER_B, B_OVERLAY), {PEER_B: peer}, Counter())
    assert len(queue) == 0 and len(tun.read_now(8)) == 1


def test_route_ready_leaves_the_answers_to_a_bulk_delivery_for_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """After more than TUN_POLL_MAX packets the TUN reader takes the answers, a wake-up later."""
    monkeypatch.setattr(egress, "TUN_POLL", True)
    tun = MemoryTun()
    queue = PacketQueue(64)
    peer = Peer(peer_id=PEER_B, addresses=addressing.derive(PEER_B.to_bytes(), "default"), queue=queue)
    tun.inject(udp4(A_OVERLAY, B_OVERLAY, b"an ACK"))
    route_ready(tun, routes_to(PEER_B, B_OVERLAY), {PEER_B: peer}, Counter(), delivered=egress.TUN_POLL_MAX + 1)
    assert len(queue) == 0 and len(tun.read_now(8)) == 1
