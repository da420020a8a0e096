"""A thin wrapper around the py-libp2p host, so the rest of p2pvpn does not depend on its internals.

Security: only Noise is offered and accepted. py-libp2p's defaults also
accept the plaintext and secio handshakes; plaintext would let anyone claim
any peer ID, which would void every check built on "noise authenticated
this peer", so we never offer them. The only muxer is yamux.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pvpn.errors import NetworkSetupError

log = logging.getLogger(__name__)

# Errors a stream or dial can raise when the other side goes away; callers treat them all as "gone".
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    BaseLibp2pError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ValueError,  # py-libp2p's QUIC streams raise it for closed streams
)
DIAL_TIMEOUT = 10.0
PEERSTORE_TTL = 3600

StreamHandler = Callable[[INetStream], Awaitable[None]]


class Host:
    """Our view of a libp2p host: listen, dial a peer for a protocol, accept streams."""

    def __init__(
        self,
        key_pair: KeyPair,
        listen: Sequence[str],
        announce: Sequence[str] = (),
        exclude_interfaces: Sequence[str] = (),
        mdns: bool = False,
    ) -> None:
        self.listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
        self._announce = [multiaddr.Multiaddr(a) for a in announce]
        self._exclude_interfaces = set(exclude_interfaces)
        enable_quic = any("quic-v1" in a for a in listen)
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self._host: IHost = new_host(
            key_pair=key_pair,
            sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
            muxer_preference="YAMUX",
            listen_addrs=self.listen_addrs,
            enable_quic=enable_quic,
            addrs_factory=self._advertised,
            enable_mDNS=mdns,
        )

    @property
    def peer_id(self) -> ID:
        return self._host.get_id()

    @property
    def libp2p(self) -> IHost:
        """The underlying py-libp2p host, for the few places (DHT, relay) that need it."""
        return self._host

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Listen on the configured addresses for the duration of the block."""
        for addr in self.listen_addrs:
            check_port_free(addr)
        try:
            try:
                async with self._host.run(self.listen_addrs):
                    if not self._host.get_addrs():
                        raise NetworkSetupError(f"could not listen on {', '.join(map(str, self.listen_addrs))}")
                    yield
            finally:
                # py-libp2p runs listeners in trio system tasks that outlive host.run();
                # closing the swarm releases the ports (matters when a node restarts in-process).
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await self._host.get_network().close()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetworkSetupError(f"listen address in use: {exc.strerror}") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise NetworkSetupError("listen address is not assigned to this host") from None
            raise NetworkSetupError(f"cannot listen: {exc.strerror or exc}") from None

    def _advertised(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """What we tell others (identify, records): explicit announce addresses, or the
        listen addresses with 0.0.0.0/:: expanded to this host's interface addresses.

        Addresses on our own TUN are never advertised: reaching us through the
        overlay to build the overlay would loop.
        """
        if self._announce:
            return list(self._announce)
        out: list[multiaddr.Multiaddr] = []
        for addr in candidates:
            out.extend(expand_unspecified(addr, self._exclude_interfaces))
        seen: set[str] = set()
        return [a for a in out if not (str(a) in seen or seen.add(str(a)))]  # type: ignore[func-returns-value]

    def advertised(self) -> list[multiaddr.Multiaddr]:
        """Our advertised addresses without /p2p/<id>, as they go into our node record."""
        return self._advertised(list(self._host.get_transport_addrs()))

    def known_peers_with_addrs(self) -> list[ID]:
        """Peers the peerstore has addresses for (how mDNS hands us its findings)."""
        store = self._host.get_peerstore()
        return [p for p in store.peers_with_addrs() if p != self.peer_id]

    def addrs(self) -> list[str]:
        """Our listen addresses with /p2p/<id>, to hand to other nodes."""
        return [str(a) for a in self._host.get_addrs()]

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._host.set_stream_handler(TProtocol(protocol), handler)

    async def open_stream(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], protocol: str) -> INetStream:
        """Connect (reusing a live connection) and open a stream for ``protocol``."""
        if addrs:
            self._host.get_peerstore().add_addrs(peer_id, list(addrs), PEERSTORE_TTL)
        with trio.fail_after(DIAL_TIMEOUT):
            if peer_id not in self._host.get_connected_peers():
                self._host.get_network().unblock_peer(peer_id)  # type: ignore[attr-defined]  # we back off ourselves; libp2p's 60 s negative dial cache would stall redials
                await self._host.connect(PeerInfo(peer_id, list(addrs)))
            return await self._host.new_stream(peer_id, [TProtocol(protocol)])

    def connected_peers(self) -> list[ID]:
        return list(self._host.get_connected_peers())


def expand_unspecified(addr: multiaddr.Multiaddr, exclude_interfaces: set[str]) -> list[multiaddr.Multiaddr]:
    """Replace 0.0.0.0 / :: by each interface address of that family (loopback only if nothing else)."""
    import ipaddress

    names = [p.name for p in addr.protocols()]
    if not names or names[0] not in ("ip4", "ip6"):
        return [addr]
    host = addr.value_for_protocol(names[0])
    if host not in ("0.0.0.0", "::"):
        return [addr]
    rest = str(addr).split("/", 3)[3]  # everything after /ip4/<host>/
    found: list[tuple[bool, str]] = []
    for ifname, ip in interface_addresses():
        if ifname in exclude_interfaces:
            continue
        parsed = ipaddress.ip_address(ip)
        if (parsed.version == 4) != (names[0] == "ip4") or parsed.is_link_local or parsed.is_multicast:
            continue
        found.append((parsed.is_loopback, f"/{names[0]}/{ip}/{rest}"))
    chosen = [a for loop, a in found if not loop] or [a for _, a in found]
    return [multiaddr.Multiaddr(a) for a in chosen] or [addr]


def interface_addresses() -> list[tuple[str, str]]:
    """(interface name, address) for every address on this host's interfaces."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [(names.get(a["index"], ""), a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()]


def check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Fail early if another process holds the port.

    py-libp2p listens with SO_REUSEPORT (for hole punching), so a second node
    on the same port would not fail: the kernel would silently share incoming
    connections between the two. A plain bind without SO_REUSEPORT does fail
    in that case, which is the check we want.
    """
    import socket

    names = [p.name for p in addr.protocols()]
    family = socket.AF_INET6 if names[0] == "ip6" else socket.AF_INET
    if "tcp" in names:
        kind, port = socket.SOCK_STREAM, int(addr.value_for_protocol("tcp"))
    elif "udp" in names:
        kind, port = socket.SOCK_DGRAM, int(addr.value_for_protocol("udp"))
    else:
        return
    if port == 0:
        return
    host = addr.value_for_protocol(names[0])
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # Tolerate TIME_WAIT leftovers of a previous run; Linux still refuses a port someone listens on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetworkSetupError(f"listen address {addr} is already in use") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise NetworkSetupError(f"listen address {addr} is not assigned to this host") from None
            raise NetworkSetupError(f"cannot listen on {addr}: {exc.strerror}") from None


def remote_peer(stream: INetStream) -> ID:
    return stream.muxed_conn.peer_id


def describe_path(stream: INetStream) -> dict[str, Any]:
    """Transport, path (direct/relayed) and remote address of the connection under ``stream``."""
    conn = stream.muxed_conn
    transport = "quic" if "quic" in type(conn).__name__.lower() else "tcp"
    remote = None
    try:
        addr = stream.get_remote_address()
        if addr:
            remote = f"{addr[0]}:{addr[1]}"
    except Exception:  # some connection types don't know their remote address
        remote = None
    relayed = "circuit" in type(conn).__name__.lower() or "p2p-circuit" in str(getattr(conn, "remote_multiaddr", ""))
    return {"transport": transport, "path": "relayed" if relayed else "direct", "remote": remote}
