"""Keeps one working tunnel per peer: dials, accepts, resolves duplicates, redials.

Theory of operation:
* Each static peer has a dial task: while the peer has no tunnel it dials
  with exponential backoff (0.1 s doubling to 4 s, ±20 % jitter), runs the
  tunnel to its end, and starts over; after a tunnel that worked (lived
  STABLE_AFTER) the backoff starts again from 0.1 s, so a restarted peer is
  redialed at once.
* Inbound streams arrive through a bounded channel (the libp2p handler only
  hands them over) and run as tasks of our nursery. Each holds a ticket
  until its handshake ends: known peers from their own gauge, strangers from
  gauges bounded in total, per peer and per IP (p2pvpn.limits), so strangers
  cannot starve members of handshake slots.
* When both sides dial at once there are two tunnels; both sides keep the
  direct one if only one of them runs through a relay, else the one opened
  by the smaller peer ID (raw bytes), or the newer one if the same side
  opened both, and close the other with Close(DUPLICATE). Both sides
  compute the same answer without talking, so they converge.
* A tunnel through a relay moves once a direct connection exists (hole
  punching, or the peer became reachable): the side with the smaller peer
  ID opens a second tunnel, which goes over the direct connection; the
  duplicate rule keeps it and retires the relayed one without losing the
  frames in flight. The smaller side does it so that peers applying only
  the older rules (initiator, then newer) reach the same answer.
* A peer's queue and counters outlive its tunnels; only the send loop moves.
* On demand (``enable_on_demand``, docs/protocol.md §18): members learned
  from discovery are routed but not dialed; the first packet for one
  dials it (p2pvpn.session.demand), and idle tunnels close. Static peers
  are always dialed and never idle.
* Every tunnel runs inside a failure boundary (p2pvpn.supervisor): an
  error in one tunnel (a write the peer never takes, a bug) ends that
  tunnel only, is logged once and counted in ``failures``; the peer is then
  redialed after a per-peer backoff (1 s doubling to 30 s, ±20 %) that a
  tunnel lasting STABLE_AFTER resets. A fatal local error (the TUN is gone)
  still ends the node.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.dataplane import icmp
from p2pvpn.dataplane.destinations import LocalDestinations
from p2pvpn.dataplane.egress import route_ready
from p2pvpn.discovery.record import dialable
from p2pvpn.dataplane.ingress import datagram_receiver
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.datagram.udp_socket import DatagramSocket
from p2pvpn.host import DIAL_TIMEOUT, STREAM_ERRORS, Host, describe_path, remote_peer, source_key
from p2pvpn.limits import Ticket
from p2pvpn.nat.circuit import CircuitError
from p2pvpn.routing import RouteTable
from p2pvpn.session.handshake import HandshakeError, make_hello
from p2pvpn.session.peer import Peer, PeerState
from p2pvpn.session.tunnel import Tunnel, WriteTimeout
from p2pvpn.session.udp_link import UdpLink
from p2pvpn.stats import DropReason
from p2pvpn.supervisor import Backoff, Failures, contained, one_line
from p2pvpn.tun.device import TunDevice
from p2pvpn.wire.codec import PROTOCOL_ID, CloseCode, ProtocolError

if TYPE_CHECKING:
    from p2pvpn.discovery.record import NodeRecord
    from p2pvpn.session.demand import OnDemand
    from p2pvpn.membership.view import MembershipView

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1        # a peer that is starting up listens within a fraction of a second
BACKOFF_MAX = 4.0
STABLE_AFTER = 2.0       # a tunnel that lived this long resets the backoff
MAX_PENDING_INBOUND = 64
POLITE_DELAY = 0.25      # the larger peer ID waits this long before its first dial (the smaller dials first)
MIGRATE_INTERVAL = 0.5   # seconds between checks for relayed tunnels that could go direct
MIGRATE_RETRY = 5.0      # seconds before trying again after a failed move
TOO_BIG_PER_SECOND, TOO_BIG_BURST = 10.0, 20  # ICMP "packet too big" answers (p2pvpn.dataplane.icmp)
FAILURE_BACKOFF_MIN, FAILURE_BACKOFF_MAX = 1.0, 30.0  # redial delay after a tunnel failed (see the boundary)


def own_smaller(own: ID, other: ID) -> bool:
    """Whether we are the side that moves a relayed tunnel (the smaller peer ID, docs/protocol.md)."""
    return own.to_bytes() < other.to_bytes()


def backoff_delays(rng: random.Random | None = None) -> Iterable[float]:
    """0.1, 0.2, 0.4, ... 4, 4 seconds, each with ±20 % jitter so peers don't redial in lockstep."""
    backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX, rng=rng)
    while True:
        yield backoff.next_delay()


def preferred(a: Tunnel, b: Tunnel) -> Tunnel:
    """The tunnel both ends keep when two exist (docs/protocol.md, duplicate tunnels)."""
    a_relayed, b_relayed = a.path.get("path") == "relayed", b.path.get("path") == "relayed"
    if a_relayed != b_relayed:
        return b if a_relayed else a
    if a.initiator != b.initiator:
        return a if a.initiator.to_bytes() < b.initiator.to_bytes() else b
    return a if a.created > b.created else b


class SessionManager:
    def __init__(
        self,
        host: Host,
        tun: TunDevice,
        routes: RouteTable[ID],
        network: str,
        local: addressing.OverlayAddresses,
        mtu: int,
        queue_packets: int,
        keepalive: float,
        allow_peers: Iterable[ID] = (),
        failures: Failures | None = None,
        membership: MembershipView | None = None,
        udp: DatagramSocket | None = None,
    ) -> None:
        self.host = host
        self.tun = tun
        self.routes = routes
        self.network = network
        self.local = local
        self.mtu = mtu
        self.queue_packets = queue_packets
        self.keepalive = keepalive
        self.allow_peers = set(allow_peers)
        self.peers: dict[ID, Peer] = {}
        self.drops: Counter[str] = Counter()
        self.icmp_sent: Counter[str] = Counter()  # "too_big" answered, "too_big_limited" not (rate limit)
        self._too_big_bucket = icmp.TokenBucket(TOO_BIG_PER_SECOND, TOO_BIG_BURST)
        self.handshake_failures: Counter[str] = Counter()
        self.failures = failures or Failures()  # contained failures, node-wide (the node's control_error too)
        # Node-wide totals of per-peer drops, kept when a peer is removed (status ``drops_total``).
        self.removed_peer_drops: Counter[str] = Counter()
        self._retry: dict[ID, Backoff] = {}
        self._retry_at: dict[ID, float] = {}  # trio time before which we don't redial a peer whose tunnel failed
        # In an owned network (docs/protocol.md §15.9.1) certificates decide who gets a tunnel.
        self.membership = membership
        self.udp = udp  # the node's datagram-path socket (docs/protocol.md §16); None: udp off
        self._certificate = membership.own.raw if membership is not None else b""
        self._hello = make_hello(network, local, mtu, offload=tun.offload, certificate=self._certificate,
                                 datagram=udp is not None)
        # Admission bounds what waits here (_admit), so the channel never overflows before it does.
        limits = host.limits.limits
        pending = max(MAX_PENDING_INBOUND, limits.handshakes_known + limits.handshakes)
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[INetStream](pending)
        self._admitted: dict[int, Ticket] = {}  # id(stream) -> its handshake ticket
        self.destinations = LocalDestinations(local, network)  # ingress destination check; the exit role widens it
        self.firewall: Any = None  # ingress policy check (p2pvpn.policy.firewall.Firewall); set by the node
        self._nursery: trio.Nursery | None = None
        self.collisions = 0
        self.rejected_addrs = 0  # record addresses never dialed because of their scope (discovery.record.dialable)
        # Loopback in a record names our own host, unless every node here lives on loopback (tests).
        listen = list(getattr(host, "listen_addrs", ()))
        self._loopback_only = bool(listen) and all(_is_loopback(a) for a in listen)
        # Set by the node when discovery runs: told when a member with a lower peer ID claims our IPv4.
        self.on_local_collision: Callable[[NodeRecord], None] | None = None
        # Set by exit use with --exit-via: the addresses we actually dial a peer at (through a relay).
        self.rewrite_dial_addrs: Callable[[ID, list[multiaddr.Multiaddr]], list[multiaddr.Multiaddr]] | None = None
        self.demand: OnDemand | None = None  # on-demand tunnels (enable_on_demand); None: a tunnel to every member
        self._dialing: set[int] = set()  # id() of the Peer objects with a running dial loop (one each)
        self._dial_at_once: set[ID] = set()  # peers whose next dial loop skips POLITE_DELAY (want(at_once=True))
        self.keep_exits = False  # on demand, a node using an exit keeps tunnels to the exits (selection probes them)
        # Relayed tunnels, the only ones the migration loop looks at; it sleeps while there are none.
        self._relayed: dict[ID, Peer] = {}
        self._relayed_added = trio.Event()

    def enable_on_demand(self, idle_timeout: float) -> OnDemand:
        """Open tunnels to members when traffic needs them, close them when idle (before ``run``)."""
        from p2pvpn.session.demand import OnDemand

        self.routes.set_v6_overlay(self.local.ipv6.packed[:8])
        self.demand = OnDemand(self, idle_timeout)
        return self.demand

    # -- peers -------------------------------------------------------------

    def add_static_peer(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> Peer:
        """A peer we keep a tunnel to; its routes exist before it connects so packets queue."""
        peer = self._ensure_peer(peer_id, learned_from="static")
        peer.learned_from = "static"
        peer.dial_addrs = self.rewrite_dial_addrs(peer_id, addrs) if self.rewrite_dial_addrs else addrs
        self._want(peer)
        return peer

    def learn(self, record: NodeRecord, source: str) -> Peer | None:
        """A verified record of a member: route to it and keep a tunnel to it.

        Address collisions resolve the same way on every node: of two peers
        claiming one IPv4, the one whose peer ID sorts lower keeps it, the
        other must move to its next derivation candidate (docs/protocol.md).
        """
        peer_id = record.peer_id
        if peer_id == self.host.peer_id:
            return None
        if record.ipv4 == self.local.ipv4:
            if peer_id.to_bytes() < self.host.peer_id.to_bytes() and self.on_local_collision is not None:
                self.on_local_collision(record)
            self.collisions += 1
            return None
        owner = self.routes.lookup(record.ipv4.packed)
        if owner is not None and owner != peer_id:
            if peer_id.to_bytes() > owner.to_bytes():
                self.collisions += 1
                known = self.peers.get(peer_id)
                if known is not None:
                    known.last_error = f"overlay address {record.ipv4} collides with {owner}; waiting for it to move"
                return None
            loser = self.peers[owner]
            loser.last_error = f"overlay address {record.ipv4} collides with {peer_id}; waiting for it to move"
            self.routes.remove_peer(owner)
            self.collisions += 1
        peer = self.peers.get(peer_id)
        addresses = addressing.OverlayAddresses(record.ipv4, record.ipv6, record.address_index)
        if peer is None:
            peer = Peer(peer_id=peer_id, addresses=addresses, queue=PacketQueue(self.queue_packets),
                        learned_from=source, mtu=self.mtu, state=PeerState.DOWN)
            self.peers[peer_id] = peer
        elif peer.addresses != addresses and peer.tunnel is not None:
            peer.tunnel.close(CloseCode.ADDRESS_MISMATCH, "peer moved to another overlay address")
        peer.addresses = addresses
        self._set_routes(peer)
        if peer.learned_from == "inbound":
            peer.learned_from = source
        peer.record = record
        peer.record_fetched = time.time()
        addrs = [multiaddr.Multiaddr(str(a)) for a in (*record.addrs, *record.relay_addrs)]
        if len(kept := [a for a in addrs if dialable(a, self._loopback_only)]) != len(addrs):
            self.rejected_addrs += len(addrs) - len(kept)  # never dialed: loopback, link-local, ... (by scope)
            addrs = kept
        if self.rewrite_dial_addrs is not None:
            addrs = self.rewrite_dial_addrs(peer_id, addrs)
        if addrs != peer.dial_addrs:
            peer.dial_addrs = addrs
            peer.addrs_changed.set()  # e.g. the peer got relay slots: a dial on the old addresses is moot
        if self.demand is None or peer.learned_from == "static" or (self.keep_exits and record.exit is not None):
            self._want(peer)
        return peer

    def forget(self, peer_id: ID) -> None:
        """A discovered peer's record lapsed: stop dialing it, drop its routes and queue (static peers stay).

        In an owned network a live tunnel stays: its peer proved membership with a certificate, which
        revocation and expiry already judge (§15.9.3), and a record lapses for reasons that say nothing
        about membership (a DHT server restarting). The peer goes when that tunnel ends.
        """
        peer = self.peers.get(peer_id)
        if peer is None or peer.learned_from == "static":
            return
        peer.wanted = False
        if peer.tunnel is not None:
            if self.membership is not None:
                return
            peer.tunnel.close(CloseCode.NORMAL, "record expired")
        self._remove_peer(peer)

    def renew_certificate(self, certificate: bytes) -> None:
        """A renewed certificate (same addresses): new tunnels send it; live ones learn it by a push."""
        self._certificate = certificate
        self._hello = make_hello(self.network, self.local, self.mtu, offload=self.tun.offload, certificate=certificate,
                                 datagram=self.udp is not None)

    def move_local(self, local: addressing.OverlayAddresses) -> None:
        """We moved to another overlay address: re-handshake every tunnel so peers learn it."""
        self.local = local
        self.destinations.set_local(local)
        self._hello = make_hello(self.network, local, self.mtu, offload=self.tun.offload,
                                 certificate=self._certificate, datagram=self.udp is not None)
        for peer in self.peers.values():
            if peer.tunnel is not None:
                peer.tunnel.close(CloseCode.ADDRESS_MISMATCH, "our overlay address changed")

    def want(self, peer: Peer, at_once: bool = False) -> None:
        """Keep a tunnel to ``peer``: dial it until one is up (on demand: p2pvpn.session.demand).

        ``at_once``: no POLITE_DELAY before the first dial. A demand dial: the
        peer does not dial us (nothing of ours waits there), so waiting for it
        only delays the packets that asked for the tunnel.
        """
        if at_once:
            self._dial_at_once.add(peer.peer_id)
        self._want(peer)

    def _want(self, peer: Peer) -> None:
        if peer.wanted:
            return
        peer.wanted = True
        if peer.tunnel is None:
            peer.set_tunnel(None)  # state: connecting
        if self._nursery is not None and id(peer) not in self._dialing:  # a loop still running sees ``wanted``
            self._nursery.start_soon(self._dial_loop, peer)

    def _ensure_peer(self, peer_id: ID, learned_from: str, index: int = 0) -> Peer:
        peer = self.peers.get(peer_id)
        if peer is None:
            addrs = addressing.derive(peer_id.to_bytes(), self.network, index)
            peer = Peer(peer_id=peer_id, addresses=addrs, queue=PacketQueue(self.queue_packets),
                        learned_from=learned_from, mtu=self.mtu, state=PeerState.DOWN)
            self._set_routes(peer)
            self.peers[peer_id] = peer
        return peer

    def _set_routes(self, peer: Peer) -> None:
        if peer.addresses.ipv4 == self.local.ipv4:
            raise HandshakeError(CloseCode.ADDRESS_MISMATCH, f"peer's overlay address {peer.addresses.ipv4} is our own")
        try:
            self.routes.set_peer(peer.peer_id, (peer.addresses.ipv4.packed, peer.addresses.ipv6.packed))
        except ValueError:
            raise HandshakeError(
                CloseCode.ADDRESS_MISMATCH, f"overlay address {peer.addresses.ipv4} is already used by another peer"
            ) from None

    def _remove_peer(self, peer: Peer) -> None:
        self.removed_peer_drops.update(peer.stats.drops)
        self.routes.remove_peer(peer.peer_id)
        self._retry.pop(peer.peer_id, None)
        self._retry_at.pop(peer.peer_id, None)
        dropped = peer.queue.clear()
        if dropped:
            self.drops[DropReason.PEER_DOWN] += dropped
        self.peers.pop(peer.peer_id, None)

    def known(self, peer_id: ID) -> bool:
        """A peer we know without asking anyone: static, allowed, or with a verified record."""
        existing = self.peers.get(peer_id)
        if existing is not None and (existing.learned_from == "static" or existing.record is not None):
            return True
        return peer_id in self.allow_peers

    def listed(self, peer_id: ID) -> bool:
        """Explicitly welcome without a certificate: a static peer or one in allow_peers."""
        existing = self.peers.get(peer_id)
        return (existing is not None and existing.learned_from == "static") or peer_id in self.allow_peers

    # -- running -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and dial until cancelled; owns every tunnel task."""
        self.host.set_handler(PROTOCOL_ID, self._on_stream)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in list(self.peers.values()):
                if peer.wanted:
                    nursery.start_soon(self._dial_loop, peer)
            nursery.start_soon(self._migrate_loop)
            if self.demand is not None:
                await nursery.start(self.demand.run)
            if self.udp is not None:
                self.udp.after_delivery = self._route_tun_now
                await nursery.start(self.udp.run)
            task_status.started()
            async for stream in self._inbound_recv:
                nursery.start_soon(self._run_tunnel, stream, remote_peer(stream))

    async def _on_stream(self, stream: INetStream) -> None:
        """libp2p's handler: hand the stream to our nursery, never run it in libp2p's."""
        if not self._admit(stream):
            self.handshake_failures["limit"] += 1
            await stream.reset()
            return
        try:
            self._inbound_send.send_nowait(stream)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._admission_done(stream)
            self.handshake_failures["overloaded"] += 1
            await stream.reset()

    def _admit(self, stream: INetStream) -> bool:
        """A handshake ticket for this inbound stream: known peers apart, strangers per peer and IP."""
        peer = remote_peer(stream)
        if self.known(peer):
            ticket = self.host.limits.acquire("handshakes_known")
        else:
            ticket = self.host.limits.acquire("handshakes", ("handshakes_per_peer", peer),
                                              ("handshakes_per_ip", source_key(stream)))
        if ticket is None:
            return False
        self._admitted[id(stream)] = ticket
        return True

    def _admission_done(self, stream: INetStream) -> None:
        ticket = self._admitted.pop(id(stream), None)
        if ticket is not None:
            ticket.release()

    async def _dial_loop(self, peer: Peer) -> None:
        if id(peer) in self._dialing:
            return
        self._dialing.add(id(peer))
        try:
            await self._dial_until_unwanted(peer)
        finally:
            self._dialing.discard(id(peer))

    async def _dial_until_unwanted(self, peer: Peer) -> None:
        delays = iter(backoff_delays())
        at_once = peer.peer_id in self._dial_at_once
        self._dial_at_once.discard(peer.peer_id)
        if not at_once and self.host.peer_id.to_bytes() > peer.peer_id.to_bytes() and peer.tunnel is None:
            # Let the smaller peer ID dial first: two simultaneous dials give two libp2p
            # connections, and libp2p may close the one under the tunnel both sides kept.
            with trio.move_on_after(POLITE_DELAY):
                await peer.tunnel_changed.wait()
        while self.peers.get(peer.peer_id) is peer and peer.wanted:
            if peer.tunnel is not None:
                await peer.tunnel_changed.wait()
                continue
            if (wait := self._retry_at.get(peer.peer_id, 0.0) - trio.current_time()) > 0:
                with trio.move_on_after(wait):  # its last tunnel failed: back off (a new tunnel ends the wait)
                    await peer.tunnel_changed.wait()
                continue
            if self.demand is not None:
                self._dial_step(peer, "dial_started", had_connection=peer.peer_id in self.host.connected_peers())
            try:
                stream = await self._dial_once(peer)
            except (trio.TooSlowError, CircuitError, *STREAM_ERRORS) as exc:  # a relay's refusal is a failed dial too
                peer.last_error = f"dial failed: {_one_line(exc)}"
                self._dial_step(peer, "dial_failed", dial_error=_one_line(exc)[:120])
                log.debug("dial %s failed: %r", peer.peer_id, exc)
                with trio.move_on_after(next(delays)):
                    await peer.addrs_changed.wait()
                continue
            if stream is None:  # its addresses changed meanwhile: dial the new ones now
                delays = iter(backoff_delays())
                continue
            self._dial_step(peer, "connected")  # connection (Noise, yamux) and our protocol's stream are open
            started = time.monotonic()
            await self._run_tunnel(stream, self.host.peer_id)
            if time.monotonic() - started >= STABLE_AFTER:
                delays = iter(backoff_delays())
            if peer.tunnel is None:
                await trio.sleep(next(delays))

    def _dial_step(self, peer: Peer, step: str, **info: object) -> None:
        """On demand: where a dial is (set-up timelines, p2pvpn.session.ondemand.SetupTimelines)."""
        if self.demand is not None:
            self.demand.dial_step(peer.peer_id, step, **info)

    async def _dial_once(self, peer: Peer) -> INetStream | None:
        """One dial of the peer's current addresses; None if they changed before it finished."""
        peer.addrs_changed = changed = trio.Event()
        stream: INetStream | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def abandon_when_changed() -> None:
                    await changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(abandon_when_changed)
                stream = await self.host.open_stream(peer.peer_id, peer.dial_addrs, PROTOCOL_ID)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # nurseries (ours, the host's) wrap the dial's error; _dial_loop handles it
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            raise error from None
        return stream

    async def _migrate_loop(self) -> None:
        """Move relayed tunnels to a direct connection as soon as one exists (we: smaller peer ID).

        Checks every MIGRATE_INTERVAL s the relayed tunnels we would move, and
        only them (an idle node with direct tunnels does no periodic work here,
        whatever the number of members); with none it waits for one.
        """
        assert self._nursery is not None
        own = self.host.peer_id.to_bytes()
        while True:
            if not self._relayed:
                self._relayed_added = trio.Event()
                await self._relayed_added.wait()
            await trio.sleep(MIGRATE_INTERVAL)
            now = time.monotonic()
            for peer in list(self._relayed.values()):
                tunnel = peer.tunnel
                if (
                    tunnel is not None
                    and tunnel.path.get("path") == "relayed"
                    and own < peer.peer_id.to_bytes()
                    and now >= peer.migrate_after
                    and self.host.has_direct_connection(peer.peer_id)
                ):
                    peer.migrate_after = now + MIGRATE_RETRY
                    self._nursery.start_soon(self._migrate, peer)

    async def _migrate(self, peer: Peer) -> None:
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                stream = await self.host.open_stream(peer.peer_id, [], PROTOCOL_ID)
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("moving the tunnel with %s off the relay failed: %r", peer.peer_id, exc)
            return
        if describe_path(stream)["path"] != "direct":  # the direct connection went away meanwhile
            await stream.reset()
            return
        log.info("moving the tunnel with %s to a direct connection", peer.peer_id)
        await self._run_tunnel(stream, self.host.peer_id)

    def tunnel_failed(self, peer_id: ID, kind: str, detail: str) -> None:
        """Count a tunnel's failure and push the peer's next dial back (bounded, jittered backoff)."""
        self.failures.record(kind, peer_id, detail)
        peer = self.peers.get(peer_id)
        if peer is None or not peer.wanted:
            return  # we never dial it, so there is nothing to back off (and no state per stranger)
        backoff = self._retry.setdefault(peer_id, Backoff(FAILURE_BACKOFF_MIN, FAILURE_BACKOFF_MAX))
        self._retry_at[peer_id] = trio.current_time() + backoff.next_delay()

    def drops_total(self) -> Counter[str]:
        """Drops node-wide: the node's own plus every peer's, present and removed (survive tunnels closing)."""
        total = Counter(self.drops)
        total.update(self.removed_peer_drops)
        for peer in self.peers.values():
            total.update(peer.stats.drops)
        return total

    def _answer_too_big(self, packet: bytes, mtu: int) -> None:
        """A packet over a peer's MTU was dropped: tell its sender (ICMP), at most a few per second."""
        if not self._too_big_bucket.take(time.monotonic()):
            self.icmp_sent["too_big_limited"] += 1
            return
        reply = icmp.too_big_reply(packet, mtu)
        if reply is not None and self.tun.write(reply):
            self.icmp_sent["too_big"] += 1

    async def _run_tunnel(self, stream: INetStream, initiator: ID) -> None:
        """One tunnel inside its failure boundary: whatever it raises ends it alone (fatal errors aside)."""
        remote_id = remote_peer(stream)
        failed: list[str] = []

        def on_failure(kind: str, detail: str) -> None:
            failed.append(kind)
            self.tunnel_failed(remote_id, kind, detail)

        with contained(on_failure, "tunnel_error", {WriteTimeout: "tunnel_write_timeout"}):
            await self._tunnel(stream, initiator, remote_id)
        if failed:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await stream.reset()  # the tunnel died mid-way: nothing it wrote last can be trusted
                except STREAM_ERRORS:
                    pass

    async def _tunnel(self, stream: INetStream, initiator: ID, remote_id: ID) -> None:
        """Handshake, attach to the peer, carry traffic; always leaves the stream closed."""
        tunnel = Tunnel(stream, remote_id, initiator)
        tunnel.too_big = self._answer_too_big
        tunnel.destination_ok = self.destinations.allowed
        tunnel.firewall = self.firewall
        try:
            peer = await self._handshake(tunnel)
        except HandshakeError as exc:
            self.handshake_failures[exc.code.name.lower()] += 1
            log.info("tunnel with %s refused: %s", remote_id, exc)
            if (known := self.peers.get(remote_id)) is not None:
                known.last_error = str(exc)
            tunnel.close(exc.code, str(exc))
            await tunnel.shutdown()
            return
        except (ProtocolError, trio.TooSlowError, *STREAM_ERRORS) as exc:
            self.handshake_failures["failed"] += 1
            log.debug("handshake with %s failed: %r", remote_id, exc)
            tunnel.close(CloseCode.PROTOCOL_ERROR, one_line(exc))
            await tunnel.shutdown()
            return
        finally:
            self._admission_done(stream)
        if tunnel.datagram_agreed and self.udp is not None:
            tunnel.link = self._udp_link(tunnel, peer)
        self._attach(peer, tunnel)
        self._dial_step(peer, "tunnel_up", path=tunnel.path.get("path"))
        if tunnel.path.get("path") == "relayed" and own_smaller(self.host.peer_id, remote_id):  # we move it
            self._relayed[remote_id] = peer
            self._relayed_added.set()
        via = f" via {tunnel.path['relay']}" if tunnel.path.get("relay") else ""
        log.info("tunnel with %s up (%s, %s%s)", remote_id, tunnel.path.get("transport"), tunnel.path.get("path"), via)
        started = trio.current_time()
        try:
            await tunnel.run(peer, self.routes, self.tun, self.keepalive)
        finally:
            self._detach(peer, tunnel)
            if self._relayed.get(remote_id) is peer and (peer.tunnel is None or peer.tunnel.path.get("path") != "relayed"):
                del self._relayed[remote_id]
        if tunnel.failure is not None:
            self.tunnel_failed(remote_id, tunnel.failure, tunnel.close_reason)
        elif trio.current_time() - started >= STABLE_AFTER and (backoff := self._retry.get(remote_id)) is not None:
            backoff.reset()

    def _route_tun_now(self, delivered: int) -> None:
        """Egress step 1': what the kernel answered inside the datagram path's TUN writes, in the same wake-up."""
        route_ready(self.tun, self.routes, self.peers, self.drops, self.firewall, self.demand, delivered)

    def _udp_link(self, tunnel: Tunnel, peer: Peer) -> UdpLink:
        """The tunnel's datagram path: keys over its stream, packets through the node's UDP socket."""
        assert self.udp is not None
        try:
            remote_host: str | None = tunnel.stream.get_remote_address()[0]  # type: ignore[index]
        except Exception:  # noqa: BLE001 - connection types without a remote address: offer endpoints only
            remote_host = None
        deliver = datagram_receiver(peer, self.routes, self.tun, self.destinations.allowed, self.firewall)
        return UdpLink(self.udp, tunnel.initiator == self.host.peer_id, self.host.peer_id.to_bytes(),
                       tunnel.remote_id.to_bytes(), remote_host, tunnel.write, deliver)

    async def _handshake(self, tunnel: Tunnel) -> Peer:
        """Hellos first, then authorization (docs/protocol.md §7.1-7.2).

        Every peer gets our Hello before any Close, and the Hello checks run
        before the authorization check, which may cost a DHT lookup: a stranger
        with a wrong network or a forged address is refused without one.
        """
        remote_id = tunnel.remote_id
        params = await tunnel.handshake(self._hello, self.network, self.membership)
        if self.membership is not None:
            if params.certificate is None and not self.listed(remote_id):
                raise HandshakeError(CloseCode.NOT_AUTHORIZED, "no membership certificate, and not in peers or allow_peers")
        elif not self.listed(remote_id):  # no owner, no members: only listed peers (docs/protocol.md §10)
            raise HandshakeError(CloseCode.NOT_AUTHORIZED, "peer is not in peers or allow_peers")
        peer = self._ensure_peer(remote_id, learned_from="inbound", index=params.address_index)
        if (params.ipv4, params.ipv6) != (peer.addresses.ipv4, peer.addresses.ipv6):  # moved, or certificate
            peer.addresses = addressing.OverlayAddresses(params.ipv4, params.ipv6, params.address_index)
            self._set_routes(peer)
        peer.mtu = min(self.mtu, params.mtu)
        return peer

    def _attach(self, peer: Peer, tunnel: Tunnel) -> None:
        current = peer.tunnel
        if current is not None:
            keep = preferred(current, tunnel)
            lose = tunnel if keep is current else current
            lose.retire(CloseCode.DUPLICATE, "another tunnel to this peer is kept")
            if keep is current:
                return
        peer.set_tunnel(tunnel)
        tunnel.activate()
        self.host.protect_member(peer.peer_id)  # py-libp2p's pruning must not close a tunnel's connection
        if self.demand is not None:
            self.demand.idle.opened(peer.peer_id, peer.stats.packets_in + peer.stats.packets_out,
                                    tunnel.initiator == self.host.peer_id, trio.current_time())

    def _detach(self, peer: Peer, tunnel: Tunnel) -> None:
        if peer.tunnel is tunnel:
            if tunnel.close_reason:
                peer.last_error = tunnel.close_reason
            peer.set_tunnel(None)
            log.info("tunnel with %s down: %s", peer.peer_id, tunnel.close_reason or "closed")
            if self.demand is not None and self.peers.get(peer.peer_id) is peer:
                self.demand.detached(peer)  # no redial unless packets wait; the record keeps its route
                if peer.record is not None or peer.wanted:
                    return
            if not peer.wanted:
                self._remove_peer(peer)


def _is_loopback(addr: multiaddr.Multiaddr) -> bool:
    host = str(addr).split("/")[2:3]
    return host in (["127.0.0.1"], ["::1"]) or (host != [] and host[0].startswith("127."))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
