"""p2pvpn.libp2p_compat.install_tuning: its canaries, and the behaviour each change buys.

* A Data frame is not answered by a yamux WINDOW_UPDATE each: py-libp2p's
  default credited the window on every read (one more frame, Noise record
  and peer wake-up per Data frame); we credit in batches, as go-yamux does.
* A dial to one address returns when the connection is up, without the
  250 ms happy-eyeballs wait: shown on a frozen trio clock, where any wait
  for a timer would never end (a real-time watchdog bounds the test).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import multiaddr
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network import swarm
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from p2pvpn import libp2p_compat
from p2pvpn.host import Host
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
    # The stream path only: once a datagram path is up (udp, on by default) packets leave the stream,
    # and whether it is up by the first packet depends on how busy the CPU is.
    a, b = cluster.pair(dht="off", udp=False)
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
    libp2p_compat.install_tuning()
    libp2p_compat.install_tuning()
    assert YamuxStream._auto_tune_and_send_window_update is libp2p_compat._credit_in_batches
    assert swarm._HAPPY_EYEBALLS_DELAY == 0.0


async def test_dial_returns_without_waiting_for_a_timer(mock_clock: trio.testing.MockClock) -> None:
    proto = "/p2pvpn/test/dial/1.0.0"
    a = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
    b = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])

    async def handler(stream: object) -> None:
        await stream.close()  # type: ignore[attr-defined]

    b.set_handler(proto, handler)
    async with a.running(), b.running(), trio.open_nursery() as nursery:

        async def watchdog() -> None:  # real time: the frozen clock cannot time out
            await trio.to_thread.run_sync(time.sleep, 60, abandon_on_cancel=True)
            raise AssertionError("the dial waited for a timer (the clock is frozen)")

        nursery.start_soon(watchdog)
        addrs = [multiaddr.Multiaddr(str(x)) for x in b.libp2p.get_transport_addrs()]
        stream = await a.open_stream(b.peer_id, addrs, proto)
        assert trio.current_time() == 0.0
        await stream.reset()
        nursery.cancel_scope.cancel()


async def test_bulk_transfer_is_credited_and_completes(tmp_path: Path) -> None:
    """Far more than a window (256 KiB) crosses: credit must arrive, or the sender would stall."""
    cluster = Cluster(tmp_path)
    a, b = cluster.pair(dht="off")
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
