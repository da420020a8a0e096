"""Real py-libp2p hosts running our Dht, in one process on loopback: for DHT tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from p2pvpn.discovery.dht import Dht
from p2pvpn.host import Host


async def until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms for at most ``timeout`` s; whether it came true."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return True
    return False


async def dht_hosts(stack: AsyncExitStack, count: int, network: str) -> tuple[list[Host], list[Dht]]:
    """``count`` listening hosts, each with a DHT server of ``network``, kept running by ``stack``.

    Not connected to each other: the caller chooses the topology.
    """
    hosts = [Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) for _ in range(count)]
    dhts: list[Dht] = []
    for host in hosts:
        await stack.enter_async_context(host.running())
        dhts.append(Dht(host, network, server=True))
        await stack.enter_async_context(dhts[-1].running())
    return hosts, dhts
