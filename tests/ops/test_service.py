"""Running as a service, in process with real libp2p hosts: `down` over the control socket, SIGTERM's
graceful stop (peers hear Close), and SIGHUP's reload of the peer lists (kept tunnels untouched)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from p2pvpn import config
from p2pvpn.cli_ops import run_node
from p2pvpn.control import client
from p2pvpn.node import Node, control_path
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.wire.codec import CloseCode


def _tunnel(node: Node, other: Node):  # type: ignore[no-untyped-def]
    assert node.manager is not None
    peer = node.manager.peers.get(other.peer_id)
    return peer.tunnel if peer is not None else None


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


async def test_down_over_the_control_socket_closes_tunnels_with_close_and_returns(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    a, b = cluster.pair(dht="off")
    path = control_path(a.config, a.directory)
    async with running(b):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await wait_up(a, b, 20)
            await wait_up(b, a, 20)
            at_b = _tunnel(b, a)
            reply = await trio.to_thread.run_sync(client.request, path, "down")
            assert reply == {"stopping": True, "role": "node", "peer_id": str(a.peer_id)}
            with trio.fail_after(10):  # a.run returns by itself: this nursery ends without a cancel
                await _until(lambda: not path.exists())
        # b heard a Close(NORMAL) with our reason, not a keepalive timeout
        await _until(lambda: _tunnel(b, a) is not at_b)
        assert at_b.remote_close is not None and at_b.remote_close.code == CloseCode.NORMAL, at_b.close_reason
        assert at_b.remote_close.reason == "node shutting down"
        assert cluster.tuns["a"].closed


async def test_sigterm_stops_gracefully_and_sighup_reloads_the_peer_lists(tmp_path: Path) -> None:
    """a lists b and c; config.toml then drops c and keeps b: b's tunnel is the same object, c's is closed."""
    cluster = Cluster(tmp_path)
    for name in ("a", "b", "c"):
        cluster.node(name, dht="off")
    b = cluster.node("b", peers=[cluster.addr("a")], dht="off")
    c = cluster.node("c", peers=[cluster.addr("a")], dht="off")
    a = cluster.node("a", peers=[cluster.addr("b"), cluster.addr("c")], dht="off")
    a.start_overrides = {"listen": list(a.config.listen), "tun": "a", "keepalive": 0.5, "dht": "off"}
    toml = a.directory / config.CONFIG_FILE
    async with running(b, c):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_node, a)
            await wait_up(a, b, 30)
            await wait_up(a, c, 30)
            kept = _tunnel(a, b)
            created = kept.created

            # A malformed file: one log line, nothing changes.
            toml.write_text("peers = [\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await trio.sleep(1.0)
            assert _tunnel(a, b) is kept and _tunnel(a, c) is not None
            assert a.config.peers == (cluster.addr("b"), cluster.addr("c"))

            # c removed, b kept.
            at_c = _tunnel(c, a)
            toml.write_text(f'peers = ["{cluster.addr("b")}"]\n')
            os.kill(os.getpid(), signal.SIGHUP)
            await _until(lambda: c.peer_id not in a.manager.peers)  # type: ignore[union-attr]
            assert _tunnel(a, b) is kept and kept.created == created and kept.close_code is None
            assert a.config.peers == (cluster.addr("b"),)
            await _until(lambda: _tunnel(c, a) is not at_c)
            assert at_c.remote_close is not None and at_c.remote_close.code == CloseCode.NOT_AUTHORIZED
            # c keeps dialing (a is its static peer): refused at the handshake, never a peer of a again
            await trio.sleep(1.5)
            assert c.peer_id not in a.manager.peers  # type: ignore[union-attr]

            # SIGTERM: a graceful stop; run_node returns, b hears Close(NORMAL).
            at_b = _tunnel(b, a)
            os.kill(os.getpid(), signal.SIGTERM)
        await _until(lambda: _tunnel(b, a) is not at_b)
        assert at_b.remote_close is not None and at_b.remote_close.code == CloseCode.NORMAL, at_b.close_reason


def test_reload_with_own_id_or_bad_values_keeps_the_running_config(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    a = cluster.node("a", dht="off")
    before = a.config
    toml = a.directory / config.CONFIG_FILE
    for text, words in ((f'peers = ["{cluster.addr("a")}"]\n', "own peer ID"),
                        ('allow_peers = ["nonsense"]\n', "invalid peer ID"),
                        ("mtu = 'big'\n", "mtu")):
        toml.write_text(text)
        reply = a.reload()
        assert "reload refused" in reply["error"] and words in reply["error"], reply
        assert a.config is before
