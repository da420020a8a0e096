"""A relay under a hop-stream flood from strangers still serves a member (real hosts, in process)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.limits import Limits, ResourceManager
from p2pvpn.nat import circuit as c
from p2pvpn.roles.relay import RelayLimits, RelayService
from p2pvpn.testing.cluster import free_port

STRANGERS = 4
STREAMS_EACH = 10


def new_host(limits: ResourceManager | None = None) -> Host:
    return Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"], limits=limits)


async def test_silent_hop_streams_are_capped_and_a_member_still_reserves() -> None:
    rm = ResourceManager(Limits(relay_hops=6, relay_hops_per_peer=2))
    relay = new_host(rm)
    member = new_host()
    strangers = [new_host() for _ in range(STRANGERS)]

    async def is_member(peer: ID) -> bool:
        return peer == member.peer_id

    async with AsyncExitStack() as stack:
        for host in (relay, member, *strangers):
            await stack.enter_async_context(host.running())
        relay.is_member = lambda peer: peer == member.peer_id
        service = RelayService(relay, RelayLimits(), is_member, rm, relay.is_member)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)

            async def silent(host: Host) -> None:
                try:
                    stream = await host.libp2p.new_stream(relay.peer_id, [c.HOP_PROTOCOL])
                    await stream.read(1)  # never send RESERVE: hold the relay's negotiation slot
                except STREAM_ERRORS:
                    pass

            async with trio.open_nursery() as flood:
                for host in strangers:
                    await host.libp2p.connect(PeerInfo(relay.peer_id, relay.listen_addrs))
                    for _ in range(STREAMS_EACH):
                        flood.start_soon(silent, host)
                with trio.fail_after(30):
                    while rm.gauges["relay_hops"].in_use < 6 or rm.gauges["relay_hops_per_peer"].hits == 0:
                        await trio.sleep(0.05)
                await member.libp2p.connect(PeerInfo(relay.peer_id, relay.listen_addrs))
                with trio.fail_after(20):
                    reservation = await c.reserve(member, relay.peer_id)
                assert reservation.expire > 0
                status = rm.status()
                flood.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    assert status["relay_hops"]["in_use"] <= 6
    assert status["relay_hops_per_peer"]["busiest"] <= 2
    assert status["relay_hops_per_peer"]["hits"] + status["relay_hops"]["hits"] >= STRANGERS * STREAMS_EACH - 6
