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
from p2pvpn.libp2p_compat import new_host
from libp2p.network.config import ConnectionConfig
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pvpn import libp2p_compat
from p2pvpn.dial_backoff import DialBackoff, address_host
from p2pvpn.errors import NetworkSetupError
from p2pvpn.limits import ResourceManager
from p2pvpn.supervisor import OnFailure, contained

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
RELAY_HEAD_START = 1.0  # seconds direct addresses get before relayed ones are tried as well
# Connections py-libp2p itself allows beyond our strangers' limit (limit_conns): members' room.
# Its hard cap refuses anyone past it and its pruner starts there, so it sits above ours.
MEMBER_CONN_HEADROOM = 1024

StreamHandler = Callable[[INetStream], Awaitable[None]]
# Dials ``peer`` through the relay named in a /p2p-circuit address (p2pvpn.nat.circuit.connect_via).
RelayDialer = Callable[[ID, multiaddr.Multiaddr], Awaitable[None]]


def _log_handler_failure(kind: str, detail: str) -> None:
    log.warning("%s: %s", kind, detail)


class Host:
    """Our view of a libp2p host: listen, dial a peer for a protocol, accept streams."""

    def __init__(
        self,
        key_pair: KeyPair,
        listen: Sequence[str],
        announce: Sequence[str] = (),
        exclude_interfaces: Sequence[str] = (),
        mdns: bool = False,
        limits: ResourceManager | None = None,
    ) -> None:
        libp2p_compat.check_once()
        # Inbound streams and connections are admitted by these (p2pvpn.admission); the node
        # tells us who its members are, who are bounded apart from strangers.
        self.limits = limits or ResourceManager()
        self.is_member: Callable[[ID], bool] = lambda peer_id: False
        self.listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
        self._announce = [multiaddr.Multiaddr(a) for a in announce]
        self._exclude_interfaces = set(exclude_interfaces)
        self.relay_dialer: RelayDialer | None = None  # set when NAT traversal runs
        self.on_handler_failure: OnFailure = _log_handler_failure  # the node counts them in status
        libp2p_compat.install_tuning()  # yamux credit per half window; no 250 ms wait per dial (latency)
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
            # No auto-connector: py-libp2p's default dials peers from the peerstore until it
            # holds 100-300 connections, again and again, dead ones included (after a member
            # leaves, eleven nodes dialed it ~200 times in 25 s). Every connection we need
            # (tunnels, DHT queries, relays) is dialed when needed.
            connection_config=ConnectionConfig(
                min_connections=0, low_watermark=0,
                max_connections=self.limits.limits.conns + MEMBER_CONN_HEADROOM,
                high_watermark=self.limits.limits.conns + MEMBER_CONN_HEADROOM,
            ),
        )
        # Addresses that cannot work from here are not dialed again and again (p2pvpn.dial_backoff).
        self.dials = DialBackoff(local_loopback=any(_loopback_or_any(a) for a in self.listen_addrs))
        libp2p_compat.install_dial_filter(self._host, self.dials.verdict, self.dials.record)

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
                from p2pvpn.admission import ConnectionGate

                self._host.get_network().register_notifee(ConnectionGate(self))
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
        """Serve ``protocol``: non-members' inbound streams are bounded (p2pvpn.admission.gate_streams),
        and the handler runs in a failure boundary (p2pvpn.supervisor).

        py-libp2p runs handlers in the connection's nursery, so an exception
        would end every stream of that connection: here it is counted
        (``on_handler_failure``, kind ``handler_error``) and the stream reset.
        """

        async def contained_handler(stream: INetStream) -> None:
            failed: list[str] = []

            def report(kind: str, detail: str) -> None:
                failed.append(kind)
                self.on_handler_failure(kind, f"{protocol}: {detail}")

            with contained(report, "handler_error"):
                await handler(stream)
            if failed:
                with trio.move_on_after(1):
                    try:
                        await stream.reset()
                    except STREAM_ERRORS:
                        pass

        from p2pvpn.admission import gate_streams

        self._host.set_stream_handler(TProtocol(protocol), gate_streams(self, protocol, contained_handler))

    async def open_stream(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr], protocol: str) -> INetStream:
        """Connect (reusing a live connection) and open a stream for ``protocol``.

        Streams go over a direct connection when there is one (py-libp2p picks
        direct over relayed).
        """
        direct = [a for a in addrs if not is_circuit(a)]
        relayed = [a for a in addrs if is_circuit(a)] if self.relay_dialer is not None else []
        if direct:
            self._host.get_peerstore().add_addrs(peer_id, direct, PEERSTORE_TTL)
        with trio.fail_after(DIAL_TIMEOUT):
            if peer_id not in self._host.get_connected_peers():
                libp2p_compat.unblock_peer(self._host, peer_id)  # we back off ourselves; libp2p's 60 s negative dial cache would stall redials
                await self._connect(peer_id, direct, relayed)
            return await self._host.new_stream(peer_id, [TProtocol(protocol)])

    async def _connect(self, peer_id: ID, direct: list[multiaddr.Multiaddr], relayed: list[multiaddr.Multiaddr]) -> None:
        """Direct addresses first; relayed ones too once direct ones failed or had RELAY_HEAD_START s.

        The first connection that works wins and the other attempts are
        cancelled. Relays are tried one after the other (a node publishes a
        few, for redundancy), connected relays first.
        """
        errors: list[BaseException] = []
        direct_done = trio.Event()
        connected = False

        async def dial_direct(cancel: trio.CancelScope) -> None:
            nonlocal connected
            try:
                await self._host.connect(PeerInfo(peer_id, direct))
            except STREAM_ERRORS as exc:
                errors.append(exc)
            else:
                connected = True
                cancel.cancel()
            finally:
                direct_done.set()

        async def dial_relayed(cancel: trio.CancelScope) -> None:
            nonlocal connected
            if direct:
                with trio.move_on_after(RELAY_HEAD_START):
                    await direct_done.wait()
            assert self.relay_dialer is not None
            live = set(self._host.get_connected_peers())
            for addr in sorted(relayed, key=lambda a: circuit_relay(a) not in live):
                try:
                    await self.relay_dialer(peer_id, addr)
                except (trio.TooSlowError, *STREAM_ERRORS) as exc:
                    errors.append(exc)
                    continue
                connected = True
                cancel.cancel()
                return

        async with trio.open_nursery() as nursery:
            if direct or not relayed:  # no address at all: the peerstore may still know one
                nursery.start_soon(dial_direct, nursery.cancel_scope)
            if relayed:
                nursery.start_soon(dial_relayed, nursery.cancel_scope)
        if not connected:
            if errors:
                raise errors[-1]
            raise NetworkSetupError(f"no address to dial {peer_id}")

    def connected_peers(self) -> list[ID]:
        return list(self._host.get_connected_peers())

    async def connect(self, peer_id: ID, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        """Connect to ``peer_id`` (a relay, say) unless connected, ignoring libp2p's negative dial cache.

        The swarm refuses to dial a peer for 60 s after a failed dial; a relay
        that restarts is back in seconds, and we back off ourselves.
        """
        if peer_id in self._host.get_connected_peers():
            return
        libp2p_compat.unblock_peer(self._host, peer_id)
        await self._host.connect(PeerInfo(peer_id, list(addrs)))

    def protect_member(self, peer_id: ID) -> None:
        """Keep py-libp2p's connection pruning away from a member's connections (p2pvpn.admission)."""
        from p2pvpn.admission import MEMBER_TAG

        libp2p_compat.protect_peer(self._host, peer_id, MEMBER_TAG)

    def connections_to(self, peer_id: ID) -> list[Any]:
        """The open connections to ``peer_id`` now, as opaque handles for :meth:`any_open`."""
        return [c for c in self._host.get_network().get_connections(peer_id) if not c.is_closed]

    @staticmethod
    def any_open(conns: Sequence[Any]) -> bool:
        """Whether one of ``conns`` (from :meth:`connections_to`) is still open.

        A peer that restarted between two looks is connected again, but over a
        new connection: state that lived with the old one (a relay slot) is gone.
        """
        return any(not c.is_closed for c in conns)

    def has_direct_connection(self, peer_id: ID) -> bool:
        """Whether some connection to ``peer_id`` does not run through a relay."""
        conns = self._host.get_network().get_connections(peer_id)
        return any(relay_of(conn) is None for conn in conns)


def _loopback_or_any(addr: multiaddr.Multiaddr) -> bool:
    """Whether we listen on loopback (explicitly, or on every address): then peers on loopback make sense."""
    import ipaddress

    host = address_host(str(addr))
    try:
        ip = ipaddress.ip_address(host) if host is not None else None
    except ValueError:
        return False
    return ip is not None and (ip.is_loopback or ip.is_unspecified)


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
    from p2pvpn import rtnl

    with rtnl.Rtnl() as nl:
        names = nl.links()
        return [(names.get(a.index, ""), a.address) for a in nl.addresses() if a.address]


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


STREAM_END_TIMEOUT = 2.0  # seconds a closing handshake may take before we stop waiting


async def close_quietly(stream: INetStream) -> None:
    """Close ``stream`` when we are done with it; a peer that is gone or slow is not an error here."""
    with trio.move_on_after(STREAM_END_TIMEOUT):
        try:
            await stream.close()
        except STREAM_ERRORS:
            pass


async def reset_quietly(stream: INetStream) -> None:
    """Reset ``stream`` (abandon it), bounded and without raising."""
    with trio.move_on_after(STREAM_END_TIMEOUT):
        try:
            await stream.reset()
        except STREAM_ERRORS:
            pass


def remote_peer(stream: INetStream) -> ID:
    return stream.muxed_conn.peer_id


def source_key(stream_or_conn: Any) -> str | None:
    """Where a stream or connection comes from, for per-IP limits: its remote IP, or ``relay:<id>`` if relayed.

    None for loopback: a peer on this host is no remote flood, and tests and
    benchmarks run many nodes on 127.0.0.1 (per-IP limits skip None).
    """
    import ipaddress

    conn = getattr(stream_or_conn, "muxed_conn", stream_or_conn)  # a stream's connection, or the connection
    relay = relay_of(conn)
    if relay is not None:
        return f"relay:{relay}"
    try:
        addr = conn.get_remote_address()
    except Exception:  # connection types that keep no remote address
        addr = None
    if not addr:
        return "unknown"
    try:
        if ipaddress.ip_address(str(addr[0]).split("%", 1)[0]).is_loopback:
            return None
    except ValueError:  # not an IP literal (a DNS name): counted as given
        pass
    return str(addr[0])


def is_circuit(addr: multiaddr.Multiaddr) -> bool:
    """A relayed address: ``.../p2p/<relay>/p2p-circuit[/p2p/<peer>]``."""
    return "/p2p-circuit" in str(addr)


def circuit_relay(addr: multiaddr.Multiaddr) -> ID | None:
    """The relay named in a ``/p2p-circuit`` address (None if it is not one or is malformed)."""
    text = str(addr)
    head = text.split("/p2p-circuit", 1)[0] if "/p2p-circuit" in text else ""
    if "/p2p/" not in head:
        return None
    try:
        return ID.from_base58(head.rsplit("/p2p/", 1)[1])
    except Exception:  # base58 or multihash errors for a malformed ID
        return None


def relay_of(conn: object) -> ID | None:
    """The relay a connection runs through; None for a direct one.

    A relayed connection's transport address is ``/p2p/<relay>/p2p-circuit/p2p/<peer>``.
    """
    try:
        addrs = conn.get_transport_addresses()  # type: ignore[attr-defined]
    except Exception:  # connection types that keep no addresses are direct ones
        return None
    for addr in addrs or ():
        relay = circuit_relay(addr)
        if relay is not None:
            return relay
    return None


def describe_path(stream: INetStream) -> dict[str, Any]:
    """Transport, path (direct/relayed), relay and remote address of the connection under ``stream``."""
    conn = stream.muxed_conn
    transport = "quic" if "quic" in type(conn).__name__.lower() else "tcp"
    remote = None
    try:
        addr = stream.get_remote_address()
        if addr:
            remote = f"{addr[0]}:{addr[1]}"
    except Exception:  # some connection types don't know their remote address
        remote = None
    relay = relay_of(conn)
    return {
        "transport": transport,
        "path": "relayed" if relay is not None else "direct",
        "relay": str(relay) if relay is not None else None,
        "remote": remote,
    }
