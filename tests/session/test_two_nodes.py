"""Two real libp2p hosts on loopback, joined by our tunnel, with in-memory TUNs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, free_port, running, wait_up
from p2pvpn.testing.packets import udp4, udp6


def _free_port(udp: bool = False) -> int:
    return free_port(udp)


class Lab:
    """Thin adapter over p2pvpn.testing.cluster for these tests' naming."""

    def __init__(self, tmp: Path) -> None:
        self.cluster = Cluster(tmp)
        self.tuns = self.cluster.tuns

    def node(self, name: str, port: int, peers: list[str] = (), quic: bool = False, **cfg: object) -> Node:
        self.cluster.ports[name] = port
        return self.cluster.node(name, peers, quic=quic, **cfg)


def addr(node: Node, port: int, quic: bool = False) -> str:
    transport = f"udp/{port}/quic-v1" if quic else f"tcp/{port}"
    return f"/ip4/127.0.0.1/{transport}/p2p/{node.peer_id}"


@pytest.mark.parametrize("quic", [False, True], ids=["tcp", "quic"])
async def test_packets_cross_both_ways_v4_and_v6(tmp_path: Path, quic: bool) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(quic), _free_port(quic)
    b = lab.node("b", pb, quic=quic)
    a = lab.node("a", pa, peers=[addr(b, pb, quic)], quic=quic)
    b = lab.node("b", pb, peers=[addr(a, pa, quic)], quic=quic)
    async with running(a, b):
        await wait_up(a, b, 20)
        await wait_up(b, a, 20)
        assert a.peers()[0]["transport"] == ("quic" if quic else "tcp")
        pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"hello")
        lab.tuns["a"].inject(pkt)
        with trio.fail_after(5):
            assert await lab.tuns["b"].delivered.receive() == pkt
        pkt6 = udp6(str(b.addresses.ipv6), str(a.addresses.ipv6), b"back")
        lab.tuns["b"].inject(pkt6)
        with trio.fail_after(5):
            assert await lab.tuns["a"].delivered.receive() == pkt6
        stats = a.manager.peers[b.peer_id].stats
        assert stats.packets_out == 1 and stats.packets_in == 1


async def test_spoofed_source_dropped_and_counted(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    b = lab.node("b", pb)
    a = lab.node("a", pa, peers=[addr(b, pb)])
    b = lab.node("b", pb, peers=[addr(a, pa)])
    async with running(a, b):
        await wait_up(a, b)
        forged = udp4("100.64.0.99", str(b.addresses.ipv4), b"forged")
        good = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"good")
        lab.tuns["a"].inject(forged)
        lab.tuns["a"].inject(good)
        with trio.fail_after(5):
            assert await lab.tuns["b"].delivered.receive() == good
        assert b.manager.peers[a.peer_id].stats.drops["spoofed_source"] == 1


async def test_burst_is_batched_into_few_frames(tmp_path: Path) -> None:
    # The stream's framing, so the stream alone: a datagram path coming up mid-burst (its probes answer
    # after the tunnel) would carry the rest, and may deliver some of it before stream frames still queued.
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    b = lab.node("b", pb, udp=False)
    a = lab.node("a", pa, peers=[addr(b, pb)], udp=False)
    b = lab.node("b", pb, peers=[addr(a, pa)], udp=False)
    async with running(a, b):
        await wait_up(a, b)
        await wait_up(b, a)
        packets = [udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), os.urandom(1300)) for _ in range(400)]
        for p in packets:
            lab.tuns["a"].inject(p)
        got = []
        with trio.move_on_after(10):
            while len(got) < len(packets):
                got.append(await lab.tuns["b"].delivered.receive())
        assert len(got) == len(packets), __import__("json").dumps([a.peers(), b.peers(), a.status()["handshake_failures"], b.status()["handshake_failures"]])
        assert got == packets
        stats = a.manager.peers[b.peer_id].stats
        assert stats.packets_out == 400
        assert stats.frames_out <= 400 // 10, stats.frames_out


async def test_unknown_destination_counted_as_no_route(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    a = lab.node("a", _free_port())
    async with running(a):
        lab.tuns["a"].inject(udp4(str(a.addresses.ipv4), "100.64.0.77", b"x"))
        with trio.fail_after(5):
            while a.manager.drops["no_route"] < 1:
                await trio.sleep(0.01)


async def test_simultaneous_dial_converges_on_one_tunnel(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    b = lab.node("b", pb)
    a = lab.node("a", pa, peers=[addr(b, pb)])
    b = lab.node("b", pb, peers=[addr(a, pa)])
    async with running(a, b):
        await wait_up(a, b)
        await wait_up(b, a)
        await trio.sleep(1.5)
        ta = a.manager.peers[b.peer_id].tunnel
        tb = b.manager.peers[a.peer_id].tunnel
        assert ta is not None and tb is not None
        assert ta.initiator == tb.initiator
        lab.tuns["a"].inject(udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"one"))
        with trio.fail_after(5):
            await lab.tuns["b"].delivered.receive()


async def test_unauthorized_peer_is_refused(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    b = lab.node("b", pb)  # b lists nobody: without a network owner, only listed peers get tunnels
    a = lab.node("a", pa, peers=[addr(b, pb)])
    async with running(a, b):
        with trio.fail_after(10):
            while b.manager.handshake_failures["not_authorized"] < 1:
                await trio.sleep(0.05)
        assert a.peer_id not in b.manager.peers
        # b sent its Hello first, then Close(NOT_AUTHORIZED) (docs/protocol.md §7.1): a saw the
        # Close after the handshake, not instead of it.
        with trio.fail_after(10):
            while "NOT_AUTHORIZED" not in a.manager.peers[b.peer_id].last_error:
                await trio.sleep(0.05)
        assert a.manager.peers[b.peer_id].last_error.startswith("peer closed the tunnel: NOT_AUTHORIZED")


async def test_tunnel_returns_after_peer_restarts(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    b = lab.node("b", pb)
    a = lab.node("a", pa, peers=[addr(b, pb)])
    async with running(a):
        b = lab.node("b", pb, peers=[addr(a, pa)])
        async with running(b):
            await wait_up(a, b)
        with trio.fail_after(10):
            while a.manager.peers[b.peer_id].tunnel is not None:
                await trio.sleep(0.05)
        b = lab.node("b", pb, peers=[addr(a, pa)])
        async with running(b):
            await wait_up(a, b, timeout=10)
            pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"again")
            lab.tuns["a"].inject(pkt)
            with trio.fail_after(5):
                assert await lab.tuns["b"].delivered.receive() == pkt


async def test_port_in_use_fails_cleanly_and_first_node_keeps_running(tmp_path: Path) -> None:
    from p2pvpn.errors import NetworkSetupError

    lab = Lab(tmp_path)
    port = _free_port()
    a = lab.node("a", port)
    async with running(a):
        other = lab.node("c", port, control_socket=str(tmp_path / "c.sock"))
        with pytest.raises(NetworkSetupError, match="already in use"):
            await other.run()
        assert "c" not in lab.tuns  # refused before any TUN was made: nothing to undo
        assert a.status()["listen"]


async def test_node_wide_drop_totals_survive_the_tunnel(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    pa, pb = _free_port(), _free_port()
    a = lab.node("a", pa)
    b = lab.node("b", pb, allow_peers=(str(a.peer_id),))  # a is inbound only: b forgets it when it leaves
    a = lab.node("a", pa, peers=[addr(b, pb)])
    async with running(b):
        async with running(a):
            await wait_up(a, b)
            await wait_up(b, a)
            good = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"good")
            lab.tuns["a"].inject(udp4("100.64.0.99", str(b.addresses.ipv4), b"forged"))
            lab.tuns["a"].inject(good)
            with trio.fail_after(5):
                assert await lab.tuns["b"].delivered.receive() == good
        with trio.fail_after(10):
            while a.peer_id in b.manager.peers:
                await trio.sleep(0.05)
        assert b.status()["drops_total"]["spoofed_source"] == 1
