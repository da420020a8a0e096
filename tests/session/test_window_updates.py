"""A Data frame is not answered by a yamux WINDOW_UPDATE each (p2pvpn.compat_yamux).

py-libp2p's default credits the window on every read: one more frame, Noise
record and peer wake-up per Data frame, which doubled the frames on the
wire for a ping. We credit in batches, as go-yamux does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from p2pvpn import compat_yamux
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4

PACKETS = 60


async def test_small_frames_are_credited_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[int] = []
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    cluster = Cluster(tmp_path)
    cluster.node("a", dht="off")
    cluster.node("b", dht="off")
    a = cluster.node("a", peers=[cluster.addr("b")], dht="off")
    b = cluster.node("b", peers=[cluster.addr("a")], dht="off")
    async with running(a, b):
        await wait_up(a, b)
        await wait_up(b, a)
        before = len(updates)
        for i in range(PACKETS):  # one at a time: each is its own Data frame and its own read at b
            pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), i.to_bytes(2, "big") * 50)
            cluster.tuns["a"].inject(pkt)
            with trio.fail_after(5):
                assert await cluster.tuns["b"].delivered.receive() == pkt
        assert b.manager.peers[a.peer_id].stats.frames_in >= PACKETS
        assert len(updates) - before < PACKETS // 4


def test_compat_canary_installed_and_idempotent() -> None:
    compat_yamux.install()
    compat_yamux.install()
    assert YamuxStream._auto_tune_and_send_window_update is compat_yamux._credit_in_batches


async def test_bulk_transfer_is_credited_and_completes(tmp_path: Path) -> None:
    """Far more than a window (256 KiB) crosses: credit must arrive, or the sender would stall."""
    cluster = Cluster(tmp_path)
    cluster.node("a", dht="off")
    cluster.node("b", dht="off")
    a = cluster.node("a", peers=[cluster.addr("b")], dht="off")
    b = cluster.node("b", peers=[cluster.addr("a")], dht="off")
    async with running(a, b):
        await wait_up(a, b)
        await wait_up(b, a)
        packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), bytes(1272))
        with trio.fail_after(60):
            for _ in range(10):  # ~2.6 MB in all, ten windows; 200 at a time stays within the queue's bound
                for _ in range(200):
                    cluster.tuns["a"].inject(packet)
                for _ in range(200):
                    assert await cluster.tuns["b"].delivered.receive() == packet
