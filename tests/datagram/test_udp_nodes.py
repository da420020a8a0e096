"""Two real nodes on loopback (real libp2p, real UDP sockets, in-memory TUNs): the datagram path end to end.

The path comes up by itself after the Hellos; packets then travel as UDP
datagrams (the stream carries no Data frame), pass the same ingress checks,
and a replayed or forged datagram is dropped and counted. With ``--no-udp``
on one side nothing changes from before: the stream carries everything.
"""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4


async def wait_path(node: Node, peer: Node, want: str, timeout: float = 15) -> dict:
    with trio.fail_after(timeout):
        while True:
            views = [p for p in node.peers() if p["peer_id"] == str(peer.peer_id)]
            if views and views[0]["data_path"] == want:
                return views[0]
            await trio.sleep(0.05)


async def test_packets_go_over_udp_and_frames_stay_control_only(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    a, b = cluster.pair()
    async with running(a, b):
        await wait_up(a, b, 20)
        await wait_path(a, b, "udp")
        await wait_path(b, a, "udp")
        frames_before = b.manager.peers[a.peer_id].stats.frames_in
        sent = [udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), bytes([i]) * (100 + i)) for i in range(50)]
        for packet in sent:
            cluster.tuns["a"].inject(packet)
        got = []
        with trio.fail_after(10):
            while len(got) < len(sent):
                got.append(await cluster.tuns["b"].delivered.receive())
        assert sorted(got) == sorted(sent)
        assert b.manager.peers[a.peer_id].stats.frames_in == frames_before  # no Data frame on the stream
        view = a.peers()[0]
        assert view["udp_tx_packets"] >= 50 and view["udp_endpoint"] == f"127.0.0.1:{b.status()['udp']['port']}"
        assert b.peers()[0]["udp_rx_packets"] >= 50
        assert a.status()["udp"]["port"] == cluster.ports["a"]  # the TCP listen port, reused for UDP


async def test_replayed_and_forged_datagrams_are_dropped_and_counted(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    a, b = cluster.pair()
    async with running(a, b):
        await wait_up(a, b, 20)
        await wait_path(a, b, "udp")
        # The datagrams a would send next (sealed by its live session), sent from a socket
        # of the test's own: one delivered, then replayed; another forged; junk.
        link = a.manager.peers[b.peer_id].tunnel.link
        packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"once")
        [datagram, fresh] = link.session.seal_packets([packet, packet], trio.current_time())
        target = ("127.0.0.1", b.status()["udp"]["port"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(datagram, target)
            with trio.fail_after(5):
                assert await cluster.tuns["b"].delivered.receive() == packet
            raw.sendto(datagram, target)                                     # replay
            raw.sendto(fresh[:-1] + bytes([fresh[-1] ^ 0x01]), target)       # forged (a new counter)
            raw.sendto(datagram[:20], target)                                # short
            raw.sendto(b"\x01\xff\xff\xff\xff" + datagram[5:], target)       # unknown index
        with trio.fail_after(5):
            while True:
                udp = b.status()["udp"]
                if (udp["udp_replayed"], udp["udp_bad_auth"], udp["udp_short"], udp["udp_unknown_index"]) == (1, 1, 1, 1):
                    break
                await trio.sleep(0.05)
        assert cluster.tuns["b"].delivered.statistics().current_buffer_used == 0  # nothing else came out


async def test_no_udp_on_one_side_keeps_the_stream(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.node("a")
    cluster.node("b")
    a = cluster.node("a", peers=[cluster.addr("b")])
    b = cluster.node("b", peers=[cluster.addr("a")], udp=False)
    async with running(a, b):
        await wait_up(a, b, 20)
        packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"stream")
        cluster.tuns["a"].inject(packet)
        with trio.fail_after(5):
            assert await cluster.tuns["b"].delivered.receive() == packet
        await trio.sleep(1.5)  # long enough for probes, had there been a path
        assert a.peers()[0]["data_path"] == "stream" and a.peers()[0]["udp_tx_packets"] == 0
        assert b.status()["udp"] is None
