"""Many real nodes in one process on loopback, with in-memory TUNs: for tests and benchmarks.

Everything is real but the TUN: libp2p hosts, noise, yamux, the DHT, the
tunnel protocol. What a test injects into a node's MemoryTun is what the
kernel would have written into its TUN.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from p2pvpn import identity
from p2pvpn.config import Config, validate
from p2pvpn.node import Node
from p2pvpn.testing.memtun import MemoryTun


def free_port(udp: bool = False) -> int:
    with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Builds nodes in ``directory``; a node keeps its key (and port) across rebuilds, so it can restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tuns: dict[str, MemoryTun] = {}
        self.ports: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, peers: Sequence[str] = (), quic: bool = False, **settings: Any) -> Node:
        d = self.directory / name
        d.mkdir(parents=True, exist_ok=True)
        key_path = d / identity.KEY_FILE
        key = identity.load(key_path) if key_path.exists() else identity.create(key_path)
        port = self.ports.setdefault(name, free_port(udp=quic))
        listen = f"/ip4/127.0.0.1/udp/{port}/quic-v1" if quic else f"/ip4/127.0.0.1/tcp/{port}"
        settings.setdefault("keepalive", 0.5)
        # Loopback nodes are reachable; serving the DHT from the start spares every test
        # the AutoNAT round that "auto" waits for (NAT tests set dht/reachability themselves).
        settings.setdefault("dht", "server")
        config = validate(Config(listen=(listen,), peers=tuple(peers), tun=name, **settings))

        def tun_factory(tun_name: str, mtu: int, *_addresses: object) -> MemoryTun:
            tun = MemoryTun(tun_name, mtu)
            self.tuns[name] = tun
            return tun

        node = Node(config, key, d, tun_factory=tun_factory)
        self.nodes[name] = node
        return node

    def pair(self, a: str = "a", b: str = "b", **settings: Any) -> tuple[Node, Node]:
        """Two nodes that list each other as static peers (keys and ports made first, so each knows the other)."""
        self.node(a, **settings)
        self.node(b, **settings)
        return (self.node(a, peers=[self.addr(b)], **settings), self.node(b, peers=[self.addr(a)], **settings))

    def owned(self, owner: str, members: Sequence[str] = (), roles: int | None = None) -> str:
        """An owned network (docs/protocol.md §15): ``owner`` creates it, each member gets a certificate.

        Offline, as ``p2pvpn network create`` / ``admit`` / ``join CERT`` do it. Nodes are built
        once here (keys, ports); build them again with ``network=<the returned ID>``. ``roles``
        (ROLE_* bits) for the members; None: relay and exit.
        """
        from p2pvpn.testing.owned import make_owned_network

        for name in (owner, *members):
            self.node(name)
        nid, _ = make_owned_network(self.directory / owner, {m: self.directory / m for m in members}, roles)
        return nid

    def addr(self, name: str, quic: bool = False) -> str:
        """The multiaddr (with /p2p) other nodes use to reach ``name``."""
        node = self.nodes[name]
        port = self.ports[name]
        transport = f"udp/{port}/quic-v1" if quic else f"tcp/{port}"
        return f"/ip4/127.0.0.1/{transport}/p2p/{node.peer_id}"


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[trio.Nursery]:
    """Start nodes (each ready when its run() reports started) and stop them on exit."""
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def wait_up(node: Node, peer: Node, timeout: float = 10) -> None:
    """Until ``node`` has a tunnel to ``peer``."""
    with trio.fail_after(timeout):
        while True:
            p = node.manager.peers.get(peer.peer_id) if node.manager else None
            if p is not None and p.tunnel is not None:
                return
            await trio.sleep(0.02)


async def wait_mesh(nodes: Sequence[Node], timeout: float) -> float:
    """Until every node has a tunnel to every other; returns the seconds it took."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while True:
            missing = [
                (a, b) for a in nodes for b in nodes
                if a is not b and (a.manager is None or (p := a.manager.peers.get(b.peer_id)) is None or p.tunnel is None)
            ]
            if not missing:
                return trio.current_time() - start
            await trio.sleep(0.1)
