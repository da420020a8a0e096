"""Circuit relay v2 in one process: a relay and two hosts on loopback (p2pvpn.nat.circuit, p2pvpn.roles.relay).

* b reserves a slot, a reaches b through the relay, and a stream works both
  ways over the relayed connection, which reports itself as relayed via the relay;
* a circuit between members is not limited; one with a stranger ends at the
  stranger byte limit, and the relay says why;
* a relay that serves no strangers refuses them a slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.host import STREAM_ERRORS, Host, describe_path
from p2pvpn.nat import circuit as c
from p2pvpn.roles.relay import RelayLimits, RelayService
from p2pvpn.testing.cluster import free_port

ECHO = "/test/echo/1.0.0"


@asynccontextmanager
async def trio_hosts(count: int) -> AsyncIterator[list[Host]]:
    hosts = [Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(count)]
    async with AsyncExitStack() as stack:
        for host in hosts:
            await stack.enter_async_context(host.running())
        yield hosts


def addr_of(host: Host) -> multiaddr.Multiaddr:
    return host.listen_addrs[0]


@asynccontextmanager
async def relay_lab(limits: RelayLimits, members: set[ID] | None = None) -> AsyncIterator[tuple[Host, Host, Host, RelayService]]:
    async with trio_hosts(3) as (relay, a, b), trio.open_nursery() as nursery:

        async def is_member(peer: ID) -> bool:
            return members is None or peer in members

        service = RelayService(relay, limits, is_member)
        await nursery.start(service.run)
        c.StopHandler(b).install()

        async def echo(stream) -> None:  # type: ignore[no-untyped-def]
            try:
                while data := await stream.read(65536):
                    await stream.write(data)
            except STREAM_ERRORS:
                pass

        b.set_handler(ECHO, echo)
        for host in (a, b):
            await host.libp2p.connect(PeerInfo(relay.peer_id, [addr_of(relay)]))
        yield relay, a, b, service
        nursery.cancel_scope.cancel()


async def echo_through(a: Host, b: Host, total: int) -> int:
    """Bytes echoed back of ``total`` sent in 16 KiB pieces (stops at the first error)."""
    stream = await a.libp2p.new_stream(b.peer_id, [ECHO])
    back = 0
    try:
        for _ in range(total // 16384):
            await stream.write(b"\x5a" * 16384)
            need = back + 16384
            while back < need:
                data = await stream.read(65536)
                if not data:
                    return back
                back += len(data)
    except STREAM_ERRORS:
        return back
    return back


async def test_reserve_connect_and_talk_through_the_relay() -> None:
    async with relay_lab(RelayLimits()) as (relay, a, b, service):
        rsv = await c.reserve(b, relay.peer_id)
        assert rsv.relay == relay.peer_id and rsv.limit.unlimited
        assert [str(x) for x in rsv.circuit_addrs()] == [f"{addr_of(relay)}/p2p/{relay.peer_id}/p2p-circuit"]
        with trio.fail_after(10):
            limit = await c.connect_via(a, relay.peer_id, b.peer_id)
            assert limit.unlimited
            stream = await a.libp2p.new_stream(b.peer_id, [ECHO])
            assert describe_path(stream)["path"] == "relayed"
            assert describe_path(stream)["relay"] == str(relay.peer_id)
            await stream.write(b"hello through the relay")
            assert await stream.read(100) == b"hello through the relay"
        assert service.status()["circuits"] == 1 and service.status()["member_reservations"] == 1


async def test_member_circuits_carry_more_than_strangers_may() -> None:
    limits = RelayLimits(stranger=c.CircuitLimit(duration=0, data=64 * 1024))
    async with relay_lab(limits) as (relay, a, b, service):  # everyone is a member
        await c.reserve(b, relay.peer_id)
        await c.connect_via(a, relay.peer_id, b.peer_id)
        with trio.fail_after(30):
            assert await echo_through(a, b, 512 * 1024) == 512 * 1024


async def test_a_stranger_circuit_ends_at_the_byte_limit() -> None:
    limits = RelayLimits(stranger=c.CircuitLimit(duration=0, data=64 * 1024))
    async with relay_lab(limits, members=set()) as (relay, a, b, service):  # nobody is a member
        rsv = await c.reserve(b, relay.peer_id)
        assert rsv.limit == c.CircuitLimit(duration=0, data=64 * 1024)
        limit = await c.connect_via(a, relay.peer_id, b.peer_id)
        assert limit.data == 64 * 1024
        with trio.fail_after(30):
            echoed = await echo_through(a, b, 512 * 1024)
        assert echoed < 64 * 1024
        with trio.fail_after(5):
            while service.ended.get("data_limit", 0) == 0:
                await trio.sleep(0.05)


async def test_a_relay_serving_no_strangers_refuses_their_reservation() -> None:
    async with relay_lab(RelayLimits(serve_strangers=False), members=set()) as (relay, a, b, service):
        with pytest.raises(c.CircuitError) as err:
            await c.reserve(b, relay.peer_id)
        assert err.value.status == c.PERMISSION_DENIED
        with pytest.raises(c.CircuitError) as err:
            await c.connect_via(a, relay.peer_id, b.peer_id)
        assert err.value.status == c.NO_RESERVATION
