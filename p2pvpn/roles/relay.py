"""The relay role: a circuit relay v2 "hop" that carries VPN traffic for members.

Theory of operation (libp2p specs, relay/circuit-v2.md; the client side is
``p2pvpn.nat.circuit``):

* RESERVE: a peer asks for a slot. Members (peers with a valid signed
  record in our network's DHT) get one while slots are free; strangers only
  if ``serve_strangers`` and never past the same limit. The slot lives until
  its expiry or until the peer's connection to us closes, whichever first.
* CONNECT: a peer asks to reach a peer holding a slot. We open a STOP
  stream to the target over its existing connection, and when it accepts,
  copy bytes between the two streams until either ends or the circuit's
  limit is reached. We never see more than the two peers' Noise ciphertext.
* Limits: a circuit between two members gets the member limit (default:
  none, because a VPN tunnel must carry sustained traffic; go-libp2p's
  default of 2 minutes and 128 KiB would cut every tunnel off). Any
  circuit with a stranger at either end gets the stranger limit (default:
  go-libp2p's). Circuits are also capped in total and per peer.
* Strangers' slots are capped per IP and in total below ``max_reservations``
  (a share stays free for members); hop streams being negotiated are capped
  in total and per peer (p2pvpn.limits, docs/limits.md).

:class:`RelayPolicy` makes every admission decision and keeps the counts;
it is pure and unit-tested. :class:`RelayService` moves the bytes.

Why not py-libp2p's ``CircuitV2Protocol``: it applies one set of limits to
everyone (no member/stranger distinction), keys active circuits by peer so a
second circuit of the same peer overwrites the first one's bookkeeping, and
sends every client the same limit whatever it is.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId, Reservation as PbReservation, StopMessage

from p2pvpn.host import STREAM_ERRORS, Host, close_quietly, relay_of, remote_peer, reset_quietly, source_key
from p2pvpn.limits import ResourceManager, Ticket
from p2pvpn.nat import circuit as c

log = logging.getLogger(__name__)

COPY_SIZE = 64 * 1024
MEMBER_LOOKUP_TIMEOUT = 5.0   # seconds to look a peer's record up before treating it as a stranger
EXPIRE_INTERVAL = 5.0         # seconds between sweeps for reservations of disconnected peers
WRITE_TIMEOUT = 30.0          # a circuit whose reader stalls this long is closed


@dataclass(frozen=True)
class RelayLimits:
    """The relay's limits (config keys relay_*; see p2pvpn.config)."""

    max_reservations: int = 128
    max_circuits: int = 256
    max_circuits_per_peer: int = 16
    member: c.CircuitLimit = c.CircuitLimit()
    stranger: c.CircuitLimit = c.CircuitLimit(duration=120, data=128 * 1024)
    serve_strangers: bool = True
    reservation_ttl: int = 3600


@dataclass
class Slot:
    peer: ID
    member: bool
    expire: int
    ticket: Ticket | None = None  # a stranger's share of the stranger gauges (p2pvpn.limits)


@dataclass
class RelayPolicy:
    """Admission decisions and counts; no I/O. Status codes are circuit v2's."""

    limits: RelayLimits
    slots: dict[ID, Slot] = field(default_factory=dict)
    circuits: Counter[ID] = field(default_factory=Counter)  # open circuits per peer (both ends count)
    open_circuits: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    rm: ResourceManager = field(default_factory=ResourceManager)

    def __post_init__(self) -> None:
        # One slot per peer by construction (a second RESERVE renews); strangers get at most
        # max_reservations - relay_member_reservations slots (at least one), the rest stays for members.
        self.rm.add_gauge("relay_stranger_reservations", self._stranger_share())

    def _stranger_share(self) -> int:
        return max(1, self.limits.max_reservations - self.rm.limits.relay_member_reservations)

    def set_limits(self, limits: RelayLimits) -> None:
        """New limits (a reload) for new reservations and circuits; slots and circuits held now stay."""
        self.limits = limits
        self.rm.gauges["relay_stranger_reservations"].limit = self._stranger_share()

    def reserve(self, peer: ID, member: bool, now: float, source: str | None = "unknown") -> tuple[int, Slot | None]:
        """Grant or renew ``peer``'s slot; ``source`` is its IP address (strangers are capped per IP)."""
        if not member and not self.limits.serve_strangers:
            return self._refuse("stranger_reservation", c.PERMISSION_DENIED), None
        self.expire(now)
        slot = self.slots.get(peer)
        if slot is None and len(self.slots) >= self.limits.max_reservations:
            return self._refuse("reservations_full", c.RESERVATION_REFUSED), None
        ticket = slot.ticket if slot is not None else None
        if member and ticket is not None:
            ticket.release()
            ticket = None
        if not member and ticket is None:
            ticket = self.rm.acquire("relay_stranger_reservations", ("relay_reservations_per_ip", source))
            if ticket is None:
                return self._refuse("stranger_reservations_limit", c.RESERVATION_REFUSED), None
        slot = Slot(peer, member, int(now) + self.limits.reservation_ttl, ticket)
        self.slots[peer] = slot
        return c.OK, slot

    def release(self, peer: ID) -> None:
        """The peer's connection to us closed: its slot goes (spec: slots live with the connection)."""
        slot = self.slots.pop(peer, None)
        if slot is not None and slot.ticket is not None:
            slot.ticket.release()

    def expire(self, now: float) -> None:
        for peer in [p for p, s in self.slots.items() if s.expire <= now]:
            self.release(peer)

    def admit(self, src: ID, dst: ID, src_member: bool, now: float) -> tuple[int, c.CircuitLimit]:
        """May ``src`` open a circuit to ``dst``? (status, the circuit's limit). Counts it if OK."""
        self.expire(now)
        slot = self.slots.get(dst)
        if slot is None:
            return self._refuse("no_reservation", c.NO_RESERVATION), c.CircuitLimit()
        if not src_member and not self.limits.serve_strangers:
            return self._refuse("stranger_circuit", c.PERMISSION_DENIED), c.CircuitLimit()
        if src == dst:
            return self._refuse("self_circuit", c.PERMISSION_DENIED), c.CircuitLimit()
        if self.open_circuits >= self.limits.max_circuits:
            return self._refuse("circuits_full", c.RESOURCE_LIMIT_EXCEEDED), c.CircuitLimit()
        per_peer = self.limits.max_circuits_per_peer
        if self.circuits[src] >= per_peer or self.circuits[dst] >= per_peer:
            return self._refuse("peer_circuits_full", c.RESOURCE_LIMIT_EXCEEDED), c.CircuitLimit()
        self.open_circuits += 1
        self.circuits[src] += 1
        self.circuits[dst] += 1
        limit = self.limits.member if (src_member and slot.member) else self.limits.stranger
        return c.OK, limit

    def circuit_closed(self, src: ID, dst: ID) -> None:
        self.open_circuits -= 1
        for peer in (src, dst):
            self.circuits[peer] -= 1
            if self.circuits[peer] <= 0:
                del self.circuits[peer]

    def _refuse(self, reason: str, status: int) -> int:
        self.refused[reason] += 1
        return status


@dataclass
class CircuitStats:
    src: ID
    dst: ID
    limit: c.CircuitLimit
    started: float = field(default_factory=time.time)
    bytes: int = 0


class RelayService:
    """Serves ``/libp2p/circuit/relay/0.2.0/hop`` with a :class:`RelayPolicy`."""

    def __init__(self, host: Host, limits: RelayLimits, is_member: Callable[[ID], Awaitable[bool]],
                 rm: ResourceManager | None = None, known: Callable[[ID], bool] = lambda peer: False) -> None:
        self.host = host
        self.rm = rm or ResourceManager()
        self.policy = RelayPolicy(limits, rm=self.rm)
        self._is_member = is_member
        self._known = known  # members we know without a lookup: not bounded by the strangers' hop gauges
        self._hops: dict[int, Ticket] = {}  # hop streams being negotiated (released when a circuit starts)
        self.active: dict[int, CircuitStats] = {}
        self.circuits_total = 0
        self.bytes_relayed = 0
        self.ended: Counter[str] = Counter()
        self._next_id = 0
        self._nursery: trio.Nursery | None = None

    @property
    def limits(self) -> RelayLimits:
        return self.policy.limits

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; circuits are tasks of this nursery, so they end with it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.host.set_handler(c.HOP_PROTOCOL, self._on_stream)
            task_status.started()
            while True:
                await trio.sleep(EXPIRE_INTERVAL)
                connected = set(self.host.connected_peers())
                for peer in [p for p in self.policy.slots if p not in connected]:
                    log.info("reservation of %s dropped: its connection closed", peer)
                    self.policy.release(peer)
                self.policy.expire(time.time())

    async def _on_stream(self, stream: INetStream) -> None:
        # py-libp2p runs handlers in its own tasks; a circuit lives long, so it runs in ours.
        if self._nursery is None:
            await stream.reset()
            return
        peer = remote_peer(stream)
        # Members we know are not bounded here (a joining member dials every peer through us at once;
        # max_circuits_per_peer bounds its circuits); strangers are, in total and each.
        known = self._known(peer)
        ticket = self.rm.acquire() if known else self.rm.acquire("relay_hops", ("relay_hops_per_peer", peer))
        if ticket is None:
            log.debug("hop stream from %s refused: limit", peer)
            await reset_quietly(stream)
            return
        self._hops[id(stream)] = ticket
        done = trio.Event()
        self._nursery.start_soon(self._serve, stream, done)
        await done.wait()

    async def _serve(self, stream: INetStream, done: trio.Event) -> None:
        try:
            await self._handle(stream)
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("hop stream from %s failed: %r", remote_peer(stream), exc)
            await reset_quietly(stream)
        finally:
            self._hop_done(stream)
            done.set()

    def _hop_done(self, stream: INetStream) -> None:
        """The hop stream's negotiation is over (a circuit started, or the stream ended)."""
        ticket = self._hops.pop(id(stream), None)
        if ticket is not None:
            ticket.release()

    async def _handle(self, stream: INetStream) -> None:
        peer = remote_peer(stream)
        if relay_of(stream.muxed_conn) is not None:  # spec: no reservations or circuits over circuits
            await self._status(stream, c.PERMISSION_DENIED)
            return
        msg = await c.read_hop(stream)
        if msg.type == HopMessage.RESERVE:
            await self._reserve(stream, peer)
        elif msg.type == HopMessage.CONNECT and msg.HasField("peer"):
            await self._connect(stream, peer, ID(msg.peer.id))
        else:
            await self._status(stream, c.MALFORMED_MESSAGE)

    async def _member(self, peer: ID) -> bool:
        with trio.move_on_after(MEMBER_LOOKUP_TIMEOUT):
            return await self._is_member(peer)
        return False

    async def _reserve(self, stream: INetStream, peer: ID) -> None:
        member = await self._member(peer)
        status, slot = self.policy.reserve(peer, member, time.time(), source_key(stream))
        if slot is None:
            log.info("reservation of %s refused: %s", peer, c.status_name(status))
            await self._status(stream, status)
            return
        own = [f"{a}/p2p/{self.host.peer_id}" for a in self.host.advertised()]
        limit = self.limits.member if member else self.limits.stranger
        reply = HopMessage(
            type=HopMessage.STATUS, status=c.OK,  # type: ignore[arg-type]
            reservation=PbReservation(expire=slot.expire, addrs=[_maddr_bytes(a) for a in own]),
            limit=limit.to_pb(),
        )
        await c.write_msg(stream, reply)
        log.info("reservation for %s %s (%s)", peer, "granted", "member" if member else "stranger")
        with trio.move_on_after(2):
            await stream.close()

    async def _connect(self, stream: INetStream, src: ID, dst: ID) -> None:
        src_member = await self._member(src)
        status, limit = self.policy.admit(src, dst, src_member, time.time())
        if status != c.OK:
            log.info("circuit %s -> %s refused: %s", src, dst, c.status_name(status))
            await self._status(stream, status)
            return
        try:
            try:
                with trio.fail_after(c.MESSAGE_TIMEOUT):
                    dst_stream = await self.host.libp2p.new_stream(dst, [c.STOP_PROTOCOL])
            except (trio.TooSlowError, *STREAM_ERRORS) as exc:
                log.info("circuit %s -> %s failed: cannot reach the target (%s)", src, dst, type(exc).__name__)
                await self._status(stream, c.CONNECTION_FAILED)
                return
            try:
                await c.write_msg(dst_stream, StopMessage(
                    type=StopMessage.CONNECT, peer=PeerId(id=src.to_bytes()), limit=limit.to_pb(),
                ))  # fmt: skip
                answer = await c.read_stop(dst_stream)
                if answer.type != StopMessage.STATUS or answer.status != c.OK:
                    log.info("circuit %s -> %s refused by the target: %s", src, dst, c.status_name(answer.status))
                    await self._status(stream, c.CONNECTION_FAILED)
                    await reset_quietly(dst_stream)
                    return
                await c.write_msg(stream, HopMessage(
                    type=HopMessage.STATUS, status=c.OK, limit=limit.to_pb(),  # type: ignore[arg-type]
                ))  # fmt: skip
            except (trio.TooSlowError, *STREAM_ERRORS):
                await reset_quietly(dst_stream)
                raise
            self._hop_done(stream)  # from here max_circuits bounds it
            await self._pipe(stream, dst_stream, CircuitStats(src, dst, limit))
        finally:
            self.policy.circuit_closed(src, dst)

    async def _pipe(self, a: INetStream, b: INetStream, stats: CircuitStats) -> None:
        """Copy both ways until one side ends, a write stalls, or the limit is reached."""
        key = self._next_id
        self._next_id += 1
        self.active[key] = stats
        self.circuits_total += 1
        log.info("circuit %s -> %s open%s", stats.src, stats.dst, "" if stats.limit.unlimited else f" ({stats.limit})")
        reason = "closed"
        try:
            with trio.CancelScope() as scope:
                if stats.limit.duration:
                    scope.deadline = trio.current_time() + stats.limit.duration
                async with trio.open_nursery() as nursery:
                    for src, dst in ((a, b), (b, a)):
                        nursery.start_soon(self._copy, src, dst, stats, nursery.cancel_scope)
            if scope.cancelled_caught and stats.limit.duration:
                reason = "duration_limit"
            if stats.limit.data and stats.bytes >= stats.limit.data:
                reason = "data_limit"
        finally:
            del self.active[key]
            self.ended[reason] += 1
            log.info("circuit %s -> %s ended (%s) after %.0f s, %d bytes", stats.src, stats.dst, reason,
                     time.time() - stats.started, stats.bytes)
            with trio.CancelScope(shield=True):
                await reset_quietly(a)
                await reset_quietly(b)

    async def _copy(self, src: INetStream, dst: INetStream, stats: CircuitStats, scope: trio.CancelScope) -> None:
        limit = stats.limit.data
        try:
            while True:
                data = await src.read(COPY_SIZE)
                if not data:
                    break
                if limit and stats.bytes + len(data) > limit:
                    stats.bytes = limit
                    break
                with trio.fail_after(WRITE_TIMEOUT):
                    await dst.write(data)
                stats.bytes += len(data)
                self.bytes_relayed += len(data)
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("circuit %s -> %s: %r", stats.src, stats.dst, exc)
        scope.cancel()

    async def _status(self, stream: INetStream, status: int) -> None:
        try:
            await c.write_msg(stream, HopMessage(type=HopMessage.STATUS, status=status))  # type: ignore[arg-type]
        finally:
            await close_quietly(stream)

    def status(self) -> dict[str, Any]:
        limits = self.limits
        return {
            "reservations": len(self.policy.slots),
            "member_reservations": sum(1 for s in self.policy.slots.values() if s.member),
            "circuits": len(self.active),
            "circuits_total": self.circuits_total,
            "bytes_relayed": self.bytes_relayed,
            "refused": dict(self.policy.refused),
            "ended": dict(self.ended),
            "limits": {
                "max_reservations": limits.max_reservations,
                "max_circuits": limits.max_circuits,
                "max_circuits_per_peer": limits.max_circuits_per_peer,
                "member": {"duration": limits.member.duration, "data": limits.member.data},
                "stranger": {"duration": limits.stranger.duration, "data": limits.stranger.data},
                "serve_strangers": limits.serve_strangers,
            },
        }


def _maddr_bytes(text: str) -> bytes:
    import multiaddr

    return multiaddr.Multiaddr(text).to_bytes()


def limits_from_config(cfg: Any) -> RelayLimits:
    """The relay_* keys of a :class:`p2pvpn.config.Config` as RelayLimits."""
    return RelayLimits(
        max_reservations=cfg.relay_max_reservations,
        max_circuits=cfg.relay_max_circuits,
        max_circuits_per_peer=cfg.relay_max_circuits_per_peer,
        member=c.CircuitLimit(duration=cfg.relay_member_duration, data=cfg.relay_member_bytes),
        stranger=c.CircuitLimit(duration=cfg.relay_stranger_duration, data=cfg.relay_stranger_bytes),
        serve_strangers=cfg.relay_serve_strangers,
    )
