"""A relay that restarts between two checks of our slots: the slot is lost, even though we are connected again.

Real hosts on loopback (p2pvpn.nat.reservations, p2pvpn.roles.relay). The
relay restarts with the same key on the same port, and the client is
connected to the new relay before the keeper looks again (in a network, the
relay or the client redials within a second for the DHT or a tunnel). The
new relay knows no slot; the keeper must notice and reserve again.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.host import Host
from p2pvpn.nat import reservations
from p2pvpn.nat.reservations import RelayKeeper
from p2pvpn.roles.relay import RelayLimits, RelayService
from p2pvpn.testing.cluster import free_port


async def _members(_: ID) -> bool:
    return True


async def test_a_slot_on_a_relay_that_restarted_is_dropped_and_taken_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(reservations, "BACKOFF_MIN", 0.5)
    monkeypatch.setattr(reservations, "SEARCH_EVERY", 0.5)
    relay_key, addr = create_new_key_pair(), f"/ip4/127.0.0.1/tcp/{free_port()}"
    client = Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"])
    changes: list[int] = []
    async with client.running(), trio.open_nursery() as nursery:
        first = Host(relay_key, [addr])

        async def find() -> list[tuple[ID, list]]:  # type: ignore[type-arg]
            return [(first.peer_id, list(first.listen_addrs))]

        keeper = RelayKeeper(client, find, want=1, on_change=lambda: changes.append(len(keeper.reservations)))
        keeper.enable(True)

        async with AsyncExitStack() as relay_stack:
            await relay_stack.enter_async_context(first.running())
            service = RelayService(first, RelayLimits(), _members)
            relay_nursery = await relay_stack.enter_async_context(trio.open_nursery())
            await relay_nursery.start(service.run)
            await nursery.start(keeper.run)
            with trio.fail_after(20):
                while first.peer_id not in keeper.reservations:
                    await trio.sleep(0.05)
            assert service.status()["reservations"] == 1
            # The keeper's next check comes only when woken: the restart happens between two checks.
            monkeypatch.setattr(reservations, "CHECK", 3600.0)
            keeper._wake.set()
            await trio.sleep(0.2)
            old = client.connections_to(first.peer_id)
            relay_nursery.cancel_scope.cancel()

        second = Host(relay_key, [addr])
        async with AsyncExitStack() as relay_stack:
            await relay_stack.enter_async_context(second.running())
            service = RelayService(second, RelayLimits(), _members)
            relay_nursery = await relay_stack.enter_async_context(trio.open_nursery())
            await relay_nursery.start(service.run)
            with trio.fail_after(10):  # connected again, over a new connection, before the keeper's next check
                while client.any_open(old) or not client.connections_to(second.peer_id):
                    if not client.any_open(old):
                        await client.libp2p.connect(PeerInfo(second.peer_id, list(second.listen_addrs)))
                    await trio.sleep(0.05)
            assert service.status()["reservations"] == 0  # the new relay holds no slot for us
            assert first.peer_id in keeper.reservations  # not checked yet
            monkeypatch.setattr(reservations, "CHECK", 2.0)
            keeper._wake.set()

            with trio.fail_after(30):  # CHECK (2 s) + BACKOFF_MIN + SEARCH_EVERY, with room for load
                while service.status()["reservations"] < 1:
                    await trio.sleep(0.1)
            assert second.peer_id in keeper.reservations
            assert keeper.failures["lost"] == 1
            assert 0 in changes  # the record was republished without the dead slot
            relay_nursery.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
