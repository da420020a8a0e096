"""Strangers flood a node with connections and silent tunnel streams; a member still gets its tunnel.

Real py-libp2p hosts on loopback (p2pvpn.testing.cluster): the victim is a
node that trusts DHT members, so every stranger's tunnel stream costs it a
lookup; the attackers are bare hosts with fresh identities.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn import libp2p_compat
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, free_port, wait_up
from p2pvpn.wire.codec import PROTOCOL_ID

ATTACKERS = 10
STREAMS_EACH = 20


async def flood(attacker: Host, victim: Host, opened: list[int], refused: list[int]) -> None:
    """Connect, then open STREAMS_EACH silent tunnel streams at once and hold them."""
    try:
        await attacker.libp2p.connect(PeerInfo(victim.peer_id, victim.listen_addrs))
    except STREAM_ERRORS:
        refused.append(1)
        return

    async def one() -> None:
        try:
            stream = await attacker.libp2p.new_stream(victim.peer_id, [PROTOCOL_ID])
        except (trio.TooSlowError, *STREAM_ERRORS):
            refused.append(1)
            return
        opened.append(1)
        try:
            await stream.read(1)  # silent: we never send a Hello; wait for the victim to give up on us
        except STREAM_ERRORS:
            pass

    with trio.move_on_after(8):
        async with trio.open_nursery() as nursery:
            for _ in range(STREAMS_EACH):
                nursery.start_soon(one)


async def attack_while_member_joins(victim: Node, member: Node, attackers: list[Host], opened: list[int],
                                    refused: list[int]) -> dict[str, Any]:
    """Start the victim, flood it, start the member during the flood; the victim's status once the tunnel is up."""
    async with trio.open_nursery() as nursery:
        await nursery.start(victim.run)
        assert victim.host is not None
        async with trio.open_nursery() as attack:
            for host in attackers:
                attack.start_soon(flood, host, victim.host, opened, refused)
            with trio.move_on_after(10):  # the flood is on: strangers' handshakes fill their per-peer room
                while victim.host.limits.gauges["handshakes_per_peer"].hits == 0:
                    await trio.sleep(0.05)
            await nursery.start(member.run)
            await wait_up(member, victim, 20)
            await wait_up(victim, member, 20)
            status = victim.status()
            assert libp2p_compat.is_protected(victim.host.libp2p, member.peer_id)  # safe from py-libp2p's pruning
            attack.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return status


async def test_a_member_gets_its_tunnel_while_strangers_flood(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    # Loopback has no per-IP limit (p2pvpn.host.source_key), so the strangers' total is what bites here.
    victim = cluster.node("v", trust_members="yes", limit_conns=4)
    member = cluster.node("m", peers=[], dht="off")
    victim = cluster.node("v", peers=[cluster.addr("m")], trust_members="yes", limit_conns=4)
    member = cluster.node("m", peers=[cluster.addr("v")], dht="off")
    attackers = [Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(ATTACKERS)]
    opened: list[int] = []
    refused: list[int] = []
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            for host in attackers:
                await stack.enter_async_context(host.running())
            status = await attack_while_member_joins(victim, member, attackers, opened, refused)
    limits = status["limits"]
    # Strangers were bounded by connection and by handshake limits ...
    assert limits["conns"]["hits"] >= ATTACKERS - 4, limits["conns"]
    assert limits["conns"]["in_use"] <= 4
    assert limits["handshakes_per_peer"]["hits"] > 0, limits
    assert limits["handshakes_per_peer"]["busiest"] <= 2
    assert limits["handshakes"]["in_use"] <= victim.config.limit_handshakes
    assert refused, "no stranger stream was refused"
    # ... while the member's handshake had its own room: nothing was reset for overload.
    assert "overloaded" not in status["handshake_failures"]
    assert limits["handshakes_known"]["hits"] == 0
    peers = {p["peer_id"]: p for p in status["peers"]}
    assert peers[str(member.peer_id)]["state"] == "up"
