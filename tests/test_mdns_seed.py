"""The mDNS seed loop (p2pvpn.node.Node._mdns_loop) backs off while it finds nobody new (issue 16, idle CPU)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from p2pvpn import node as node_module
from p2pvpn.node import Node


class FakeHost:
    """What the loop reads: the peerstore's peers with addresses, connected peers, their addresses."""

    def __init__(self) -> None:
        self.known: list[str] = []
        self.passes = 0
        self.libp2p = SimpleNamespace(get_peerstore=lambda: SimpleNamespace(addrs=lambda peer: [f"/addr/{peer}"]))

    def known_peers_with_addrs(self) -> list[str]:
        self.passes += 1
        return list(self.known)

    def connected_peers(self) -> list[str]:
        return []


async def test_the_seed_loop_backs_off_while_idle_and_seeds_a_new_peer_within_the_cap(
        autojump_clock: trio.testing.MockClock) -> None:
    host = FakeHost()
    seeded: list[Any] = []

    async def bootstrap(peers: list[Any]) -> int:
        seeded.extend(peers)
        return 1

    discovery = SimpleNamespace(dht=SimpleNamespace(bootstrap=bootstrap))
    owner = SimpleNamespace(_mdns_peers=set())
    host.known = ["a"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Node._mdns_loop, owner, host, discovery)  # type: ignore[arg-type]
        await trio.sleep(1)
        assert seeded == [("a", "/addr/a")]
        await trio.sleep(600)  # ten idle minutes: passes at 2, 4, 8, 16 s, then every MDNS_SEED_MAX s
        assert host.passes <= 5 + 600 / node_module.MDNS_SEED_MAX + 1, host.passes
        host.known.append("b")
        await trio.sleep(node_module.MDNS_SEED_MAX + 0.1)
        assert seeded[-1] == ("b", "/addr/b")
        nursery.cancel_scope.cancel()
