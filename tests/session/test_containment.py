"""Issue 12, point 1: one peer must not end the node.

The reproduced crash: an authorized peer sends a burst of Keepalives and
stops reading; the node's keepalive replies fill the stream's flow-control
window, a reply write times out (``trio.TooSlowError`` out of
``Tunnel._on_control``), and before the fix that error ended ``Node.run``.

The attacker here is a real py-libp2p host in this process speaking our
tunnel protocol. It never reads its stream, so the node's yamux send window
(256 KiB) runs dry exactly as when a peer stops reading its socket. py-libp2p
gives up on a dry window by itself after 5 s, which over a real network
(TCP buffers full) does not happen; the node's write timeout is lowered below
that so the test exercises the same path as the real crash: our own
``WRITE_TIMEOUT`` firing inside the keepalive reply.
"""

from __future__ import annotations

from pathlib import Path

import multiaddr
import pytest
import trio
import trio.testing

from p2pvpn import addressing, identity
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.session import tunnel as tunnel_module
from p2pvpn.session.handshake import make_hello
from p2pvpn.limits import ResourceManager
from p2pvpn.testing.cluster import Cluster, running, wait_up
from p2pvpn.testing.packets import udp4
from p2pvpn.wire.codec import PROTOCOL_ID, Keepalive, encode

BURST = 40_000  # replies of up to 9 bytes each: more than the 256 KiB of window left


async def test_peer_that_stops_reading_loses_only_its_own_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tunnel_module, "WRITE_TIMEOUT", 1.0)
    attacker_key = identity.create(tmp_path / "attacker.key")
    attacker_id = identity.peer_id(attacker_key)
    cluster = Cluster(tmp_path)
    b = cluster.node("b")
    a = cluster.node("a", peers=[cluster.addr("b")], allow_peers=(str(attacker_id),))
    b = cluster.node("b", peers=[cluster.addr("a")])
    attacker = Host(attacker_key, ["/ip4/127.0.0.1/tcp/0"])
    async with running(a, b), attacker.running():
        await wait_up(a, b, 20)
        hello = make_hello(a.config.network, addressing.derive(attacker_id.to_bytes(), a.config.network), 1400)
        target = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{cluster.ports['a']}")
        stream = await attacker.open_stream(a.peer_id, [target], PROTOCOL_ID)
        await stream.write(encode(hello))  # and never a single read from here on
        with trio.fail_after(20):
            while (peer := a.manager.peers.get(attacker_id)) is None or peer.tunnel is None:
                await trio.sleep(0.05)
        # py-libp2p grew the stream's window to a few MiB while negotiating; Data the
        # attacker never reads uses most of it up, so the Keepalive replies run it dry.
        window = peer.tunnel.stream.muxed_stream  # test-only look into py-libp2p's yamux
        filler = udp4(str(a.addresses.ipv4), str(peer.addresses.ipv4), b"x" * 1300)
        with trio.fail_after(60):
            while window.send_window > 256 * 1024:
                for _ in range(min(100, (window.send_window - 200 * 1024) // len(filler))):
                    cluster.tuns["a"].inject(filler)
                while len(peer.queue):
                    await trio.sleep(0.01)
                await trio.sleep(0.05)
        assert a.failures.counts["tunnel_write_timeout"] == 0  # the Data went through
        burst = b"".join(encode(Keepalive(seq=i)) for i in range(1, BURST + 1))
        async def send_burst() -> None:
            try:
                await stream.write(burst)
            except STREAM_ERRORS:
                pass  # the node reset the tunnel while our burst was still going out: what we wait for

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_burst)
            with trio.fail_after(60):
                while a.failures.counts["tunnel_write_timeout"] < 1:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

        # The node is alive, reports the failure, and the attacker's tunnel is gone.
        status = a.status()
        assert status["failures"]["tunnel_write_timeout"] == 1
        attacker_peer = a.manager.peers.get(attacker_id)
        assert attacker_peer is None or attacker_peer.tunnel is None
        # The other tunnel kept working throughout.
        assert a.manager.peers[b.peer_id].tunnel is not None
        packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"still here")
        cluster.tuns["a"].inject(packet)
        with trio.fail_after(5):
            assert await cluster.tuns["b"].delivered.receive() == packet


def test_learned_record_addresses_outside_a_sane_scope_are_never_dialed(tmp_path: Path) -> None:
    """Issue 12 point 4: a record naming loopback or link-local addresses makes no member dial them."""
    from types import SimpleNamespace

    from libp2p.peer.id import ID

    from p2pvpn.discovery.record import NodeRecord
    from p2pvpn.routing import RouteTable
    from p2pvpn.session.manager import SessionManager
    from p2pvpn.testing.memtun import MemoryTun

    ours = identity.peer_id(identity.create(tmp_path / "ours.key"))
    theirs = identity.peer_id(identity.create(tmp_path / "theirs.key"))
    host = SimpleNamespace(peer_id=ours, listen_addrs=[multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/4242")],
                           limits=ResourceManager())
    routes: RouteTable[ID] = RouteTable()
    manager = SessionManager(host, MemoryTun(), routes, "default", addressing.derive(ours.to_bytes(), "default"),  # type: ignore[arg-type]
                             1400, 64, 5.0)
    derived = addressing.derive(theirs.to_bytes(), "default")
    record = NodeRecord(peer_id=theirs, network="default", ipv4=derived.ipv4, ipv6=derived.ipv6, seq=1, expires=2**40,
                        addrs=("/ip4/127.0.0.1/tcp/22", "/ip6/fe80::1/tcp/4242", "/ip4/198.18.0.7/tcp/4242"))
    peer = manager.learn(record, "dht")
    assert peer is not None
    assert [str(a) for a in peer.dial_addrs] == ["/ip4/198.18.0.7/tcp/4242"]
    assert manager.rejected_addrs == 2


async def test_a_failing_stream_handler_is_contained_and_counted(tmp_path: Path) -> None:
    """A handler that raises costs one stream, counted; the connection and other protocols keep working."""
    from p2pvpn.supervisor import Failures

    server = Host(identity.create(tmp_path / "server.key"), ["/ip4/127.0.0.1/tcp/0"])
    client = Host(identity.create(tmp_path / "client.key"), ["/ip4/127.0.0.1/tcp/0"])
    failures = Failures()
    server.on_handler_failure = failures.reporter("handler")

    async def broken(stream: object) -> None:
        raise RuntimeError("handler bug")

    async def echo(stream: object) -> None:
        data = await stream.read(100)  # type: ignore[attr-defined]
        await stream.write(data)  # type: ignore[attr-defined]
        await stream.close()  # type: ignore[attr-defined]

    server.set_handler("/test/broken/1", broken)
    server.set_handler("/test/echo/1", echo)
    async with server.running(), client.running():
        target = [a for a in server.libp2p.get_addrs() if "/tcp/" in str(a)][0].decapsulate_code(421)
        for _ in range(3):
            with pytest.raises(STREAM_ERRORS), trio.fail_after(5):  # the server resets it
                stream = await client.open_stream(server.peer_id, [target], "/test/broken/1")
                await stream.read(10)
        with trio.fail_after(5):
            while failures.counts["handler_error"] < 3:
                await trio.sleep(0.05)
        stream = await client.open_stream(server.peer_id, [target], "/test/echo/1")
        await stream.write(b"ping")
        with trio.fail_after(5):
            assert await stream.read(100) == b"ping"


async def test_a_wanted_peer_whose_tunnels_fail_is_redialed_later_and_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from types import SimpleNamespace

    from libp2p.peer.id import ID

    from p2pvpn.routing import RouteTable
    from p2pvpn.session.manager import FAILURE_BACKOFF_MAX, SessionManager
    from p2pvpn.testing.memtun import MemoryTun

    ours = identity.peer_id(identity.create(tmp_path / "ours.key"))
    static = identity.peer_id(identity.create(tmp_path / "static.key"))
    stranger = identity.peer_id(identity.create(tmp_path / "stranger.key"))
    host = SimpleNamespace(peer_id=ours, listen_addrs=[], limits=ResourceManager())
    routes: RouteTable[ID] = RouteTable()
    manager = SessionManager(host, MemoryTun(), routes, "default", addressing.derive(ours.to_bytes(), "default"),  # type: ignore[arg-type]
                             1400, 64, 5.0)
    manager.add_static_peer(static, [multiaddr.Multiaddr("/ip4/198.18.0.7/tcp/4242")])
    waits = []
    for _ in range(8):
        manager.tunnel_failed(static, "tunnel_write_timeout", "test")
        waits.append(manager._retry_at[static] - trio.current_time())
    assert waits[0] <= 1.2 and all(b > a for a, b in zip(waits, waits[1:5]))
    assert max(waits) <= FAILURE_BACKOFF_MAX * 1.2
    manager.tunnel_failed(stranger, "tunnel_error", "test")  # counted, but no per-stranger state
    assert stranger not in manager._retry_at
    assert manager.failures.as_dict() == {"tunnel_write_timeout": 8, "tunnel_error": 1}
