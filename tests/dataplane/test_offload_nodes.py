"""Two real nodes in one process, TUN offload on one or both sides (MemoryTun with vnet headers).

What the story checks: a TCP super-packet that node A's kernel hands over
arrives at B as the same record when both sides do offload, and as correct
MTU-sized packets (checksums complete, payload intact) when B does not; B's
plain packets reach A's offload TUN behind a zero header.
"""

from __future__ import annotations

from pathlib import Path

import trio

from p2pvpn import identity
from p2pvpn.config import Config, validate
from p2pvpn.dataplane.offload import VNET_HDR_LEN, ZERO_VNET_HDR, segment
from p2pvpn.node import Node
from p2pvpn.testing.cluster import free_port, running, wait_up
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4, udp6
from p2pvpn.testing.superpackets import checksum_ok, tcp_record, udp_record


class Pair:
    """Nodes a and b, static peers of each other, each with a MemoryTun of the chosen kind."""

    def __init__(self, tmp: Path, offload_a: bool, offload_b: bool) -> None:
        self.tuns: dict[str, MemoryTun] = {}
        ports = {"a": free_port(), "b": free_port()}
        for name in ports:
            (tmp / name).mkdir()
        keys = {n: identity.create(tmp / n / identity.KEY_FILE) for n in ports}
        ids = {n: identity.peer_id(k) for n, k in keys.items()}
        offload = {"a": offload_a, "b": offload_b}
        self.nodes: dict[str, Node] = {}
        for name, other in (("a", "b"), ("b", "a")):
            config = validate(Config(
                listen=(f"/ip4/127.0.0.1/tcp/{ports[name]}",),
                peers=(f"/ip4/127.0.0.1/tcp/{ports[other]}/p2p/{ids[other]}",),
                tun=name, keepalive=0.5, dht="off",
            ))  # fmt: skip
            self.nodes[name] = Node(config, keys[name], tmp / name, tun_factory=self._factory(name, offload[name]))

    def _factory(self, name: str, offload: bool):  # type: ignore[no-untyped-def]
        def make(tun_name: str, mtu: int, *_addresses: object) -> MemoryTun:
            tun = MemoryTun(tun_name, mtu, offload=offload)
            self.tuns[name] = tun
            return tun

        return make

    def v4(self, name: str) -> str:
        return str(self.nodes[name].addresses.ipv4)

    def v6(self, name: str) -> str:
        return str(self.nodes[name].addresses.ipv6)

    async def up(self) -> None:
        a, b = self.nodes["a"], self.nodes["b"]
        await wait_up(a, b, 20)
        await wait_up(b, a, 20)

    def tunnel_offload(self, name: str, other: str) -> bool:
        manager = self.nodes[name].manager
        assert manager is not None
        tunnel = manager.peers[self.nodes[other].peer_id].tunnel
        assert tunnel is not None
        return tunnel.offload


async def receive(tun: MemoryTun, count: int) -> list[bytes]:
    with trio.fail_after(10):
        return [await tun.delivered.receive() for _ in range(count)]


async def test_both_sides_offload_super_packets_travel_whole(tmp_path: Path) -> None:
    pair = Pair(tmp_path, True, True)
    async with running(*pair.nodes.values()):
        await pair.up()
        assert pair.tunnel_offload("a", "b") and pair.tunnel_offload("b", "a")
        records = [
            tcp_record(pair.v4("a"), pair.v4("b"), bytes(range(256)) * 200, 1348),
            tcp_record(pair.v6("a"), pair.v6("b"), b"6" * 30000, 1328),
            udp_record(pair.v4("a"), pair.v4("b"), b"u" * 5000, 1200),
            ZERO_VNET_HDR + udp6(pair.v6("a"), pair.v6("b"), b"plain"),
        ]
        for record in records:
            pair.tuns["a"].inject(record)
        assert await receive(pair.tuns["b"], len(records)) == records
        stats = pair.nodes["b"].manager.peers[pair.nodes["a"].peer_id].stats  # type: ignore[union-attr]
        assert stats.packets_in == 4 and stats.bytes_in == sum(len(r) - VNET_HDR_LEN for r in records)
        assert pair.nodes["a"].peers()[0]["offload"] is True


async def test_offload_on_one_side_only(tmp_path: Path) -> None:
    pair = Pair(tmp_path, True, False)
    async with running(*pair.nodes.values()):
        await pair.up()
        assert not pair.tunnel_offload("a", "b") and not pair.tunnel_offload("b", "a")

        # a -> b: a super-packet is cut at a; b gets valid MTU-sized packets.
        payload = bytes(range(251)) * 200
        record = tcp_record(pair.v4("a"), pair.v4("b"), payload, 1360)
        pair.tuns["a"].inject(record)
        segments = segment(record)
        assert segments is not None and len(segments) == 37
        got = await receive(pair.tuns["b"], len(segments))
        assert got == segments
        assert all(checksum_ok(p) and len(p) <= 1400 for p in got)
        assert b"".join(p[40:] for p in got) == payload

        # A packet whose checksum the kernel left partial is completed before it leaves a.
        partial = udp_record(pair.v6("a"), pair.v6("b"), b"needs a checksum")
        pair.tuns["a"].inject(partial)
        (completed,) = await receive(pair.tuns["b"], 1)
        assert checksum_ok(completed) and completed[48:] == b"needs a checksum"

        # b -> a: plain packets arrive at a's offload TUN behind a zero header.
        plain = udp4(pair.v4("b"), pair.v4("a"), b"back")
        pair.tuns["b"].inject(plain)
        assert await receive(pair.tuns["a"], 1) == [ZERO_VNET_HDR + plain]
