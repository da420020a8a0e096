"""A Python node and the Go ``vpn`` peer (written from docs/protocol.md alone) in one overlay.

The Go peer publishes its signed record and provides "members" in the DHT;
the Python node, which knows only the bootstrap node, finds it there, opens
the tunnel, and what its (in-memory) TUN sends to the Go peer's overlay
addresses is answered by the Go responder: ICMP echo, ICMPv6 echo, UDP echo
on port 7. The bootstrap DHT server is either the Go ``dht`` mode or a
Python node. The Go peer republishes every 5 s: py-libp2p answers
find_providers from its local store alone once it holds any provider (its
own), so a Python DHT server learns a member only when that member announces
itself to it (docs/interop.md, bug 3). All on loopback; the real-TUN
``ping`` is test_go_vpn_netns.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from gopeer import LOOPBACK_LISTEN, GoPeer, icmp4_echo, icmp6_echo, parse_reply, transport_checksum_ok
from libp2p.peer.id import ID

from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running
from p2pvpn.testing.memtun import MemoryTun
from p2pvpn.testing.packets import udp4, udp6

FAST = {"record_ttl": 30.0, "discovery_interval": 0.5}
ECHO_PORT = 7


@asynccontextmanager
async def overlay(binary: Path, tmp_path: Path, bootstrap: str) -> AsyncIterator[tuple[Node, MemoryTun, GoPeer, Node | None]]:
    """A Python node with a tunnel to a Go vpn peer it found in the DHT of ``bootstrap``."""
    cluster = Cluster(tmp_path)
    boot_go: GoPeer | None = None
    boot_nodes: list[Node] = []
    try:
        if bootstrap == "go":
            boot_go = GoPeer(binary, "dht", *(f"--listen={a}" for a in LOOPBACK_LISTEN))
            boot_addr = (await boot_go.aready()) and boot_go.addr()
        else:
            boot_nodes.append(cluster.node("boot", **FAST))
            boot_addr = cluster.addr("boot")
        async with running(*boot_nodes):
            with GoPeer(binary, "vpn", "--bootstrap", boot_addr, "--keepalive", "1s", "--record-ttl", "10s",
                        "--udp-echo-port", str(ECHO_PORT), *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
                await go.aready()
                await go.await_event("published", lambda e: e["ok"], timeout=30)
                # Without a network owner only listed peers get tunnels: the Go peer is allowed by ID.
                py = cluster.node("py", bootstrap=[boot_addr], allow_peers=(go.peer_id,), **FAST)
                async with running(py):
                    go_id = ID.from_base58(go.peer_id)
                    with trio.fail_after(45):
                        while (p := py.manager.peers.get(go_id)) is None or p.tunnel is None:
                            await trio.sleep(0.05)
                    assert p.learned_from == "dht", p.describe()
                    await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id))
                    yield py, cluster.tuns["py"], go, (boot_nodes or [None])[0]
    finally:
        if boot_go is not None:
            boot_go.stop()


async def roundtrip(tun: MemoryTun, packet: bytes) -> dict:
    tun.inject(packet)
    with trio.fail_after(10):
        reply = await tun.delivered.receive()
    assert transport_checksum_ok(reply), reply.hex()
    return parse_reply(reply)


@pytest.mark.parametrize("bootstrap", ["go", "python"])
async def test_python_node_finds_the_go_vpn_peer_and_gets_echoes(go_peer_bin: Path, tmp_path: Path,
                                                                  bootstrap: str) -> None:
    async with overlay(go_peer_bin, tmp_path, bootstrap) as (py, tun, go, _boot):
        me4, me6 = str(py.addresses.ipv4), str(py.addresses.ipv6)
        ready = go.ready()
        go4, go6 = ready["ipv4"], ready["ipv6"]
        peer = py.manager.peers[ID.from_base58(go.peer_id)]
        assert (str(peer.addresses.ipv4), str(peer.addresses.ipv6)) == (go4, go6)  # from its signed record

        r = await roundtrip(tun, icmp4_echo(me4, go4, ident=0x1234, seq=1))
        assert (r["proto"], r["type"], r["src"], r["dst"], r["ident"], r["seq"]) == (1, 0, go4, me4, 0x1234, 1)
        r = await roundtrip(tun, icmp6_echo(me6, go6, ident=0x4321, seq=2))
        assert (r["proto"], r["type"], r["src"], r["dst"], r["ident"], r["seq"]) == (58, 129, go6, me6, 0x4321, 2)
        r = await roundtrip(tun, udp4(me4, go4, b"hello go", sport=40000, dport=ECHO_PORT))
        assert (r["src"], r["dst"], r["sport"], r["dport"], r["payload"]) == (go4, me4, ECHO_PORT, 40000, b"hello go")
        r = await roundtrip(tun, udp6(me6, go6, b"hello go6", sport=40001, dport=ECHO_PORT))
        assert (r["src"], r["dst"], r["sport"], r["dport"], r["payload"]) == (go6, me6, ECHO_PORT, 40001, b"hello go6")

        # A burst arrives whole (batched into Data frames both ways).
        for seq in range(200):
            tun.inject(icmp4_echo(me4, go4, ident=7, seq=seq))
        seen = set()
        with trio.fail_after(15):
            while len(seen) < 200:
                seen.add(parse_reply(await tun.delivered.receive())["seq"])

        stats = await go.stats()
        counters = stats["counters"]
        assert counters.get("echo_icmp4", 0) >= 201 and counters.get("echo_icmp6") == 1
        assert counters.get("echo_udp4") == 1 and counters.get("echo_udp6") == 1
        assert not counters.get("bad_checksum") and not counters.get("malformed") and not counters.get("spoofed_source")
        assert not counters.get("protocol_errors")
        assert stats["tunnels"][str(py.peer_id)]["rtt_ms"] >= 0


async def test_go_vpn_peer_drops_what_python_must_not_send(go_peer_bin: Path, tmp_path: Path) -> None:
    """Packets from a wrong source are dropped by Go's anti-spoofing; a checksum error is caught."""
    async with overlay(go_peer_bin, tmp_path, "go") as (py, tun, go, _boot):
        go4 = go.ready()["ipv4"]
        tun.inject(icmp4_echo("100.64.0.1", go4, ident=1, seq=1))  # not py's address
        corrupt = bytearray(icmp4_echo(str(py.addresses.ipv4), go4, ident=1, seq=2))
        corrupt[-1] ^= 0xFF
        tun.inject(bytes(corrupt))
        tun.inject(icmp4_echo(str(py.addresses.ipv4), go4, ident=1, seq=3))
        with trio.fail_after(10):
            assert parse_reply(await tun.delivered.receive())["seq"] == 3  # only the good one is answered
        counters = (await go.stats())["counters"]
        assert counters.get("spoofed_source") == 1 and counters.get("bad_checksum") == 1
