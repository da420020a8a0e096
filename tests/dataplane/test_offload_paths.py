"""The egress and ingress loops with offload records, driven by hand: no hosts, no sockets.

Egress: a peer queue of records goes in, the frames handed to ``write`` come
out. Ingress: frames go into a fake stream, what reaches the MemoryTun and
the drop counters comes out.
"""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
import trio
from libp2p.peer.id import ID

from p2pvpn.addressing import OverlayAddresses
from p2pvpn.dataplane.egress import send_to_peer
from p2pvpn.dataplane.ingress import receive_from_peer
from p2pvpn.dataplane.offload import VNET_HDR_LEN, ZERO_VNET_HDR, segment
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4
from p2pvpn.testing.superpackets import checksum_ok, tcp_record, udp_record
from p2pvpn.wire.codec import Data, Frame, FrameDecoder, ProtocolError, encode

A4, B4 = "100.64.0.1", "100.64.0.2"
A6, B6 = "fd00::1", "fd00::2"
PEER_ID = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))


def make_peer(mtu: int = 1400) -> Peer:
    addresses = OverlayAddresses(ipaddress.IPv4Address(A4), ipaddress.IPv6Address(A6))
    return Peer(peer_id=PEER_ID, addresses=addresses, queue=PacketQueue(64, 1 << 22), mtu=mtu)


def routes_for(peer: Peer) -> RouteTable[ID]:
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(peer.peer_id, (peer.addresses.ipv4.packed, peer.addresses.ipv6.packed))
    return routes


def with_header(record: bytes, **fields: int) -> bytes:
    names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")
    values = dict(zip(names, struct.unpack_from("<BBHHHH", record)))
    values.update(fields)
    return struct.pack("<BBHHHH", *(values[n] for n in names)) + record[VNET_HDR_LEN:]


async def frames_sent(records: list[bytes], tun_offload: bool, peer_offload: bool, mtu: int = 1400) -> tuple[list[Data], Peer]:
    """Queue ``records``, run send_to_peer until the queue is empty, decode what it wrote."""
    peer = make_peer(mtu)
    for record in records:
        assert peer.queue.put(record)
    wire: list[bytes] = []

    async def write(frame: bytes) -> None:
        wire.append(frame)

    with trio.move_on_after(0.2):
        await send_to_peer(peer, write, tun_offload, peer_offload)
    assert len(peer.queue) == 0
    decoder = FrameDecoder()
    decoder.feed(b"".join(wire))
    frames = list(decoder)
    assert all(isinstance(f, Data) for f in frames)
    return frames, peer  # type: ignore[return-value]


# -- egress ------------------------------------------------------------------------


async def test_records_go_to_an_offload_peer_untouched() -> None:
    records = [tcp_record(A4, B4, b"x" * 20000, 1348), udp_record(A6, B6, b"u" * 100), ZERO_VNET_HDR + udp4(A4, B4, b"p")]
    frames, peer = await frames_sent(records, tun_offload=True, peer_offload=True)
    assert [r for f in frames for r in f.offload_packets] == records
    assert all(not f.packets for f in frames)
    assert peer.stats.packets_out == 3
    assert peer.stats.bytes_out == sum(len(r) - VNET_HDR_LEN for r in records)


async def test_headers_are_made_canonical_before_sending() -> None:
    record = tcp_record(A4, B4, b"x" * 5000, 1348)
    kernel = with_header(record, hdr_len=300)  # skb_headlen(), as forwarded traffic may have
    (frame,), _ = await frames_sent([kernel], tun_offload=True, peer_offload=True)
    assert frame.offload_packets == (record,)


async def test_records_without_wire_form_are_cut_for_an_offload_peer() -> None:
    record = udp_record(A4, B4, b"u" * 100, 1)  # 100 segments: over MAX_UDP_SEGMENTS
    frames, _ = await frames_sent([record], tun_offload=True, peer_offload=True)
    sent = [r for f in frames for r in f.offload_packets]
    assert len(sent) == 100
    assert all(r.startswith(ZERO_VNET_HDR) and checksum_ok(r[VNET_HDR_LEN:]) for r in sent)


async def test_super_packets_are_segmented_for_a_peer_without_offload() -> None:
    payload = bytes(range(256)) * 250
    record = tcp_record(A6, B6, payload, 1340)  # MSS for MTU 1400 over IPv6
    frames, peer = await frames_sent([record, udp_record(A4, B4, b"u" * 10)], tun_offload=True, peer_offload=False)
    packets = [p for f in frames for p in f.packets]
    assert all(not f.offload_packets for f in frames)
    assert packets[:-1] == segment(record)
    assert all(checksum_ok(p) and len(p) <= 1400 for p in packets)
    assert peer.stats.packets_out == len(packets) == 48 + 1


async def test_segmentation_that_outgrows_a_frame_is_split() -> None:
    # 64 KiB of 1-byte segments: ~1.5 MiB of packets, over MAX_PACKETS_PER_FRAME and MAX_FRAME_LEN.
    record = tcp_record(A4, B4, bytes(4000), 1)
    frames, peer = await frames_sent([record], tun_offload=True, peer_offload=False)
    assert len(frames) == 4 and sum(len(f.packets) for f in frames) == 4000
    assert peer.stats.frames_out == 4


async def test_segments_over_the_peer_mtu_are_dropped_and_counted() -> None:
    records = [tcp_record(A4, B4, b"x" * 5000, 1448), tcp_record(A4, B4, b"y" * 5000, 1000)]
    frames, peer = await frames_sent(records, tun_offload=True, peer_offload=True, mtu=1400)
    assert [r for f in frames for r in f.offload_packets] == records[1:]
    assert peer.stats.drops["too_big"] == 1
    frames, peer = await frames_sent(records, tun_offload=True, peer_offload=False, mtu=1400)
    # Cut in software, the short last segment of the first record fits after all.
    assert sum(len(f.packets) for f in frames) == 1 + 5
    assert peer.stats.drops["too_big"] == 3


async def test_malformed_records_are_dropped_and_counted() -> None:
    broken = with_header(tcp_record(A4, B4, b"x" * 3000, 1000), gso_type=3)  # UFO: never supported
    for peer_offload in (True, False):
        frames, peer = await frames_sent([broken, ZERO_VNET_HDR + udp4(A4, B4, b"ok")], True, peer_offload)
        assert sum(len(f.packets) + len(f.offload_packets) for f in frames) == 1
        assert peer.stats.drops["bad_offload"] == 1


async def test_plain_tun_sends_plain_packets_even_to_an_offload_peer() -> None:
    packets = [udp4(A4, B4, b"a" * 100), udp4(A4, B4, b"b" * 2000)]
    (frame,), peer = await frames_sent(packets, tun_offload=False, peer_offload=True)
    assert frame == Data(packets=(packets[0],))
    assert peer.stats.drops["too_big"] == 1


# -- ingress --------------------------------------------------------------------------


class FakeStream:
    def __init__(self, wire: bytes) -> None:
        self._chunks = [wire, b""]

    async def read(self, n: int) -> bytes:
        return self._chunks.pop(0)


async def delivered(frames: list[Frame], offload: bool = True, mtu: int = 1400) -> tuple[list[bytes], Peer]:
    peer = make_peer()
    tun = MemoryTun(mtu=mtu, offload=offload)

    async def on_control(frame: Frame) -> None:
        raise AssertionError(frame)

    stream = FakeStream(b"".join(map(encode, frames)))
    await receive_from_peer(stream, FrameDecoder(), peer, routes_for(peer), tun, on_control, offload)  # type: ignore[arg-type]
    out = []
    while True:
        try:
            out.append(tun.delivered.receive_nowait())
        except trio.WouldBlock:
            return out, peer


async def test_canonical_records_are_written_whole() -> None:
    records = (tcp_record(A4, B4, b"x" * 60000, 1348), tcp_record(A6, B6, b""), ZERO_VNET_HDR + udp4(A4, B4, b"p"))
    out, peer = await delivered([Data(offload_packets=records)])
    assert out == list(records)
    assert peer.stats.packets_in == 3 and not peer.stats.drops


async def test_plain_packets_get_a_zero_header_on_an_offload_tun() -> None:
    packet = udp4(A4, B4, b"plain")
    out, _ = await delivered([Data(packets=(packet,))])
    assert out == [ZERO_VNET_HDR + packet]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (with_header(tcp_record(A4, B4, b"x" * 5000, 1348), hdr_len=300), "bad_offload"),
        (with_header(ZERO_VNET_HDR + udp4(A4, B4, b"p"), flags=2), "bad_offload"),  # DATA_VALID is not wire form
        (with_header(tcp_record(A4, B4, b"x" * 5000, 1348), gso_size=0), "bad_offload"),
        (tcp_record(A4, B4, b"x" * 5000, 1361), "too_big"),  # 40 + 1361 > 1400
        (ZERO_VNET_HDR + udp4(A4, B4, b"x" * 1373), "too_big"),
        (tcp_record("100.64.0.9", B4, b"x" * 5000, 1348), "spoofed_source"),
        (ZERO_VNET_HDR + b"\x00" * 30, "malformed"),
    ],
)
async def test_bad_records_are_dropped_and_counted(record: bytes, reason: str) -> None:
    good = tcp_record(A4, B4, b"ok")
    out, peer = await delivered([Data(offload_packets=(record, good))])
    assert out == [good]
    assert peer.stats.drops == {reason: 1}


async def test_offload_records_without_gso_1_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="gso/1 was not negotiated"):
        await delivered([Data(offload_packets=(tcp_record(A4, B4, b"x"),))], offload=False)


# -- the TUN device's offload probe (no kernel: pytun and the ioctl are faked) ------------


class FakeDevice:
    opened: list[int] = []

    def __init__(self, name: str, flags: int) -> None:
        self.flags = flags
        self._r, self._w = os.pipe()
        FakeDevice.opened.append(flags)

    def fileno(self) -> int:
        return self._r

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


@pytest.mark.parametrize(
    ("accepted", "offload", "opens"),
    [
        ("all", True, 1),      # the first probe (with USO) is taken
        ("tso", True, 1),      # an older kernel: no USO, TSO still on
        ("none", False, 2),    # TUNSETOFFLOAD refused: recreated without IFF_VNET_HDR
    ],
)
def test_tun_offload_probe_and_fallback(monkeypatch: pytest.MonkeyPatch, accepted: str, offload: bool, opens: int) -> None:
    import errno

    import pytun

    from p2pvpn.tun import device

    FakeDevice.opened = []
    monkeypatch.setattr(pytun, "TunTapDevice", FakeDevice)
    monkeypatch.setattr(device, "_interface_exists", lambda name: False)
    monkeypatch.setattr(device, "_configure", lambda *args: None)

    def ioctl(fd: int, request: int, flags: int) -> int:
        assert request == device.TUNSETOFFLOAD
        if accepted == "all" or (accepted == "tso" and not flags & (device.TUN_F_USO4 | device.TUN_F_USO6)):
            return 0
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(device.fcntl, "ioctl", ioctl)
    tun = device.LinuxTun("t0", 1400, ipaddress.IPv4Interface("100.64.0.1/10"), ipaddress.IPv6Interface("fd00::1/64"))
    assert tun.offload is offload
    assert len(FakeDevice.opened) == opens
    assert bool(FakeDevice.opened[0] & pytun.IFF_VNET_HDR)
    assert bool(FakeDevice.opened[-1] & pytun.IFF_VNET_HDR) is offload
    off = device.LinuxTun("t1", 1400, ipaddress.IPv4Interface("100.64.0.1/10"), ipaddress.IPv6Interface("fd00::1/64"),
                          offload=False)
    assert not off.offload and not FakeDevice.opened[-1] & pytun.IFF_VNET_HDR
    tun.close()
    off.close()
