"""A stranger flood against a node, in process: fresh identities opening silent tunnel streams.

Used by tests/session/test_limits_inprocess.py and bench/limits_flood.py
(docs/limits.md, "Measured"). The attackers are bare py-libp2p hosts; each
connects to the victim and opens ``streams`` tunnel streams at once without
ever sending a Hello, the cheapest way to hold a node's handshake slots.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn import libp2p_compat
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.limits import Gauge
from p2pvpn.node import Node
from p2pvpn.testing.cluster import wait_up
from p2pvpn.wire.codec import PROTOCOL_ID

HOLD = 8.0  # seconds an attacker keeps one round of streams open at most
FLOOD_ON_TIMEOUT = 60.0  # seconds the flood may take to be on before the member starts anyway (a slow, shared CPU)
MEMBER_UP_TIMEOUT = 60.0  # seconds from the member's start to its tunnel, on each side
ROUNDS = 30  # rounds of a persistent attacker at most (it stops anyway when the member is up)
ROUND_GAP = 0.5  # seconds between them


async def flood(attacker: Host, victim: Host, streams: int, opened: list[int], refused: list[int],
                dialed: set[ID], persistent: bool = False) -> None:
    """Connect (then count in ``dialed``), open ``streams`` silent tunnel streams at once and hold them.

    A ``persistent`` attacker does it again (ROUNDS at most) once a round is over: its streams were
    refused or timed out, or its connection was closed (by the victim's limits, or by py-libp2p's own
    timeouts on a starved CPU, which can otherwise end the flood before any stream arrives).
    """
    for _ in range(ROUNDS if persistent else 1):
        await _round(attacker, victim, streams, opened, refused, dialed)
        if persistent:
            await trio.sleep(ROUND_GAP)


async def _round(attacker: Host, victim: Host, streams: int, opened: list[int], refused: list[int],
                 dialed: set[ID]) -> None:
    try:
        await attacker.libp2p.connect(PeerInfo(victim.peer_id, victim.listen_addrs))
    except STREAM_ERRORS:
        refused.append(1)
        return
    finally:
        dialed.add(attacker.peer_id)

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

    with trio.move_on_after(HOLD):
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)


def flood_on(per_peer: Gauge, attackers: int, dialed: int, streams: int) -> bool:
    """Every attacker has dialed, and (when it opens more streams than one stranger may hold) one was refused."""
    return dialed >= attackers and (streams <= per_peer.limit or per_peer.hits > 0)


async def attack_while_member_joins(victim: Node, member: Node, attackers: list[Host], streams: int,
                                    opened: list[int], refused: list[int], persistent: bool = False) -> dict[str, Any]:
    """Start the victim, flood it, start the member during the flood; the victim's status once the tunnel is up.

    The member starts once the flood is on (:func:`flood_on`), however long a busy CPU makes that take
    (up to FLOOD_ON_TIMEOUT): a member started earlier would meet part of the flood, or none of it.
    """
    dialed: set[ID] = set()
    async with trio.open_nursery() as nursery:
        await nursery.start(victim.run)
        assert victim.host is not None
        gauges = victim.host.limits.gauges
        async with trio.open_nursery() as attack:
            for host in attackers:
                attack.start_soon(flood, host, victim.host, streams, opened, refused, dialed, persistent)
            with trio.move_on_after(FLOOD_ON_TIMEOUT):
                while not flood_on(gauges["handshakes_per_peer"], len(attackers), len(dialed), streams):
                    await trio.sleep(0.05)
            joined = trio.current_time()
            await nursery.start(member.run)
            await wait_up(member, victim, MEMBER_UP_TIMEOUT)
            await wait_up(victim, member, MEMBER_UP_TIMEOUT)
            status = victim.status()
            status["member_seconds"] = trio.current_time() - joined  # member start -> tunnel up on both sides
            status["member_protected"] = libp2p_compat.is_protected(victim.host.libp2p, member.peer_id)
            attack.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return status
