"""On-demand tunnels, the I/O half: lookups, demand dials, idle closing (docs/protocol.md §18).

The decisions live in p2pvpn.session.ondemand (sans-IO); this module runs
them against the session manager:

1. The TUN reader (p2pvpn.dataplane.egress) calls ``miss`` for a packet to
   an overlay address without a route. The first one starts a lookup task:
   ``resolve(address)`` (the node's address-record lookup) hands the
   member's record to the manager, which routes the address to it; the
   waiting packets move to the peer's queue and the peer is dialed.
2. ``wake`` (a packet queued for a known member without a tunnel) and a
   tunnel ending with packets still queued dial it too ("the side that
   sees traffic reopens").
3. A demand dial has until the first packet's deadline (LOOKUP_TIMEOUT
   from it; a wake gets a fresh one): then its queued packets are dropped,
   counted ``unreachable``, each answered with an ICMP "host unreachable"
   (rate-limited), and the peer is no longer dialed.
4. Every ``IdleTracker.check_interval`` s the traffic totals of open
   tunnels are observed; idle ones we opened are retired with Close(IDLE). Static
   peers, the exit in use (the default route's peer) and whatever
   ``pinned_extra`` names never idle. Reserved relays are libp2p
   connections, not tunnels: closing a tunnel never touches them.

Cost: the idle check walks open tunnels only; nothing here runs per member.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

from p2pvpn.dataplane import icmp
from p2pvpn.dataplane.offload import VNET_HDR_LEN
from p2pvpn.session.ondemand import (
    LINGERING_LOOKUPS,
    LOOKUP_LINGER,
    LOOKUP_TIMEOUT,
    DropKind,
    IdleTracker,
    Miss,
    PendingLookups,
    SetupTimelines,
)
from p2pvpn.session.peer import Peer
from p2pvpn.wire.codec import CloseCode

if TYPE_CHECKING:
    from p2pvpn.discovery.record import NodeRecord
    from p2pvpn.session.manager import SessionManager

log = logging.getLogger(__name__)

UNREACHABLE_PER_SECOND, UNREACHABLE_BURST = 10.0, 20
# A lookup that finds nothing may be early rather than final: the member's record has not reached the peers
# closest to its key yet (a node that just started, or one whose DHT mode just switched). It is asked again
# after 0.25, 0.5, 0.75 ... s. The first packet's deadline (LOOKUP_TIMEOUT) fails the waiting packets, but
# does not cut a lookup short: on a loaded machine one walk takes longer than that, and cutting it made every
# attempt start from nothing. It goes on up to LOOKUP_LINGER s past the deadline (LINGERING_LOOKUPS at once;
# the attempts stay bounded); once it found the member, the destination has a route and its next packet dials.
LOOKUP_ATTEMPTS, LOOKUP_RETRY_AFTER = 8, 0.25

# resolve(address, trace): the member's record or None; it may note what it did in ``trace`` (a dict, or None).
Resolve = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address, "dict[str, object] | None"],
                   Awaitable["NodeRecord | None"]]


class OnDemand:
    """The egress ``Demand`` hook and the tasks behind it, for one session manager."""

    def __init__(self, manager: SessionManager, idle_timeout: float, resolve: Resolve | None = None,
                 lookup_timeout: float = LOOKUP_TIMEOUT) -> None:
        self.manager = manager
        self.resolve = resolve  # set by the node when discovery runs; None: only known members are dialed
        self.pending = PendingLookups(timeout=lookup_timeout)
        self.idle: IdleTracker[ID] = IdleTracker(idle_timeout)
        self.lookup_timeout = lookup_timeout
        self.pinned_extra: Callable[[ID], bool] | None = None
        self.drops: Counter[str] = self.pending.drops  # pending_full, pending_limit, unreachable
        self.dials = 0
        self.icmp_sent = 0
        self.lookup_retries = 0  # lookups asked again after finding nothing
        self.lookups_late = 0  # lookups that found the member after their packets' deadline
        self._resolving: dict[bytes, trio.Event] = {}  # destination -> set when its lookup task ends
        self.lookup_ms: deque[float] = deque(maxlen=100)  # the last lookups' durations (status, benchmarks)
        self._deadline: dict[ID, float] = {}  # peer -> trio time by which its demand dial must have a tunnel
        self._bucket = icmp.TokenBucket(UNREACHABLE_PER_SECOND, UNREACHABLE_BURST)
        self._nursery: trio.Nursery | None = None
        self._offset = VNET_HDR_LEN if manager.tun.offload else 0
        self.timelines = SetupTimelines()  # where each set-up's time went (status; bench/scale.py's phases)
        self.clock: Callable[[], float] = time.monotonic  # the timelines' clock: CLOCK_MONOTONIC, as a probe's

    # -- the egress hook (p2pvpn.dataplane.egress.Demand) ------------------------------------

    def miss(self, destination: bytes, packet: bytes) -> bool:
        if not self.manager.routes.in_overlay(destination) or self._nursery is None:
            return False
        verdict = self.pending.miss(destination, packet, trio.current_time())
        if verdict is Miss.LOOKUP:
            self.timelines.start(str(ipaddress.ip_address(destination)), self.clock(), kind="lookup")
            log.info("first packet for %s (%s): looking up its member", ipaddress.ip_address(destination),
                     _describe(packet[self._offset:]))
            self._nursery.start_soon(self._lookup, destination)
        return True

    def wake(self, peer: Peer) -> None:
        if not peer.wanted:
            log.info("packet for %s, which has no tunnel: dialing it", peer.peer_id)
            destination = str(peer.addresses.ipv4)
            self.timelines.start(destination, self.clock(), kind="wake")
            self.timelines.attach(peer.peer_id, destination)
            self.request(peer)

    # -- dialing -------------------------------------------------------------------------------

    def request(self, peer: Peer, deadline: float | None = None) -> None:
        """Dial ``peer`` now; give up (drop its queue, counted) if no tunnel by ``deadline``."""
        if peer.wanted or self._nursery is None:
            return
        self.dials += 1
        self.timelines.mark(peer.peer_id, "dial_requested", self.clock())
        self._deadline[peer.peer_id] = deadline if deadline is not None else trio.current_time() + self.lookup_timeout
        self.manager.want(peer, at_once=True)
        self._nursery.start_soon(self._watch_dial, peer)

    def dial_step(self, peer_id: ID, step: str, **info: object) -> None:
        """The session manager's dial of ``peer_id`` reached ``step`` (dial_started, connected, tunnel_up, ...)."""
        self.timelines.mark(peer_id, step, self.clock(), **info)

    def detached(self, peer: Peer) -> None:
        """A tunnel with an on-demand peer ended: stop dialing it, unless packets still wait for it."""
        if self.pinned(peer.peer_id):
            return
        self.idle.forget(peer.peer_id)
        peer.wanted = False
        if len(peer.queue):
            self.request(peer)

    async def _watch_dial(self, peer: Peer) -> None:
        while peer.tunnel is None and peer.wanted:
            wait = self._deadline.get(peer.peer_id, 0.0) - trio.current_time()
            if wait <= 0:
                self._give_up(peer)
                return
            with trio.move_on_after(wait):
                await peer.tunnel_changed.wait()
        self._deadline.pop(peer.peer_id, None)

    def _give_up(self, peer: Peer) -> None:
        self._deadline.pop(peer.peer_id, None)
        peer.wanted = False
        peer.set_tunnel(None)  # state: down
        packets = peer.queue.drain()
        self.drops[DropKind.UNREACHABLE] += len(packets)
        for packet in packets:
            self._unreachable(packet)
        log.info("no tunnel to %s within %.1f s; its packets were dropped", peer.peer_id, self.lookup_timeout)

    # -- lookups -------------------------------------------------------------------------------

    async def _lookup(self, destination: bytes) -> None:
        deadline = self.pending.deadline(destination) or trio.current_time() + self.lookup_timeout
        started = trio.current_time()
        if self.resolve is not None and self._nursery is not None:
            ended = self._resolving.get(destination)
            if ended is None:  # else a lookup of an earlier packet goes on past its deadline: wait for it
                ended = self._resolving[destination] = trio.Event()
                linger = LOOKUP_LINGER if len(self._resolving) <= LINGERING_LOOKUPS else 0.0
                self._nursery.start_soon(self._resolve, destination, deadline, deadline + linger, ended)
            with trio.move_on_at(deadline):
                await ended.wait()
        self.lookup_ms.append(round((trio.current_time() - started) * 1000, 1))
        peer_id = self.manager.routes.lookup(destination)
        peer = self.manager.peers.get(peer_id) if peer_id is not None else None
        text = str(ipaddress.ip_address(destination))
        line = self.timelines.get(text)
        if line is not None:
            line.setdefault("lookup_done" if peer is not None else "packets_failed", round(self.clock(), 4))
        if peer is None:
            for packet in self.pending.failed(destination, trio.current_time()):
                self._unreachable(packet)
            log.info("no member holds %s (lookup)", ipaddress.ip_address(destination))
            return
        for packet in self.pending.resolved(destination):
            if not peer.queue.put(packet):
                peer.stats.drops["queue_full"] += 1
        self.timelines.attach(peer.peer_id, text)
        if peer.tunnel is None:
            self.request(peer, deadline)

    async def _resolve(self, destination: bytes, deadline: float, until: float, ended: trio.Event) -> None:
        """LOOKUP_ATTEMPTS resolves at most, until ``until``; the record they find routes ``destination``."""
        assert self.resolve is not None
        address = ipaddress.ip_address(destination)
        line = self.timelines.get(str(address))
        attempts: list[dict[str, object]] = []
        if line is not None:  # a lookup asked again continues the first one's list
            attempts = line.setdefault("attempts", attempts)  # type: ignore[assignment]
        try:
            with trio.move_on_at(until):
                for attempt in range(LOOKUP_ATTEMPTS):  # bounded, and by the time
                    trace: dict[str, object] = {"start": round(self.clock(), 4)}
                    attempts.append(trace)
                    try:
                        found = await self.resolve(address, trace) is not None
                        trace["end"] = round(self.clock(), 4)
                        if found:
                            if line is not None:
                                line.setdefault("lookup_done", trace["end"])
                            if trio.current_time() > deadline:
                                self.lookups_late += 1
                                log.info("found the member holding %s %.1f s after its first packet's deadline; "
                                         "its next packet dials it", address, trio.current_time() - deadline)
                            return
                    except Exception as exc:  # noqa: BLE001 - a failed lookup is a failed destination, counted
                        trace.update(end=round(self.clock(), 4), error=type(exc).__name__)
                        log.debug("lookup of %s failed: %r", address, exc)
                    self.lookup_retries += 1
                    await trio.sleep(LOOKUP_RETRY_AFTER * (attempt + 1))
        finally:
            del self._resolving[destination]
            ended.set()

    def _unreachable(self, packet: bytes) -> None:
        if not self._bucket.take(time.monotonic()):
            return
        reply = icmp.unreachable_reply(packet[self._offset:])
        if reply is not None and self.manager.tun.write(reply):
            self.icmp_sent += 1

    # -- idle tunnels ----------------------------------------------------------------------------

    def pinned(self, peer_id: ID) -> bool:
        """Never closed for idleness: static peers, the exit in use (and candidates), and ``pinned_extra``."""
        peer = self.manager.peers.get(peer_id)
        if peer is not None and peer.learned_from == "static":
            return True
        if self.manager.routes.default == peer_id:
            return True
        if self.manager.keep_exits and peer is not None and peer.record is not None and peer.record.exit is not None:
            return True  # an exit candidate of a node that uses exits: selection probes it
        return self.pinned_extra is not None and self.pinned_extra(peer_id)

    def check_idle(self, now: float) -> list[ID]:
        """Observe every open tunnel's traffic; retire the idle ones with Close(IDLE). Returns them."""
        own = self.manager.host.peer_id
        open_now = set()
        for peer in self.manager.peers.values():
            tunnel = peer.tunnel
            if tunnel is None:
                continue
            open_now.add(peer.peer_id)
            self.idle.observe(peer.peer_id, peer.stats.packets_in + peer.stats.packets_out,
                              tunnel.initiator == own, now)
        for key in [k for k in self.idle.keys() if k not in open_now]:
            self.idle.forget(key)
        closed = self.idle.idle(now, self.pinned)
        for peer_id in closed:
            peer = self.manager.peers.get(peer_id)
            if peer is not None and peer.tunnel is not None:
                log.info("tunnel with %s idle for %.0f s: closing", peer_id, self.idle.timeout)
                peer.tunnel.retire(CloseCode.IDLE, f"idle for {self.idle.timeout:g} s")
        return closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(self.idle.check_interval())
                    self.check_idle(trio.current_time())
                    for destination, packets in self.pending.expired(trio.current_time()):
                        for packet in packets:
                            self._unreachable(packet)
            finally:
                self._nursery = None

    def describe(self) -> dict[str, object]:
        return {
            "idle_timeout": self.idle.timeout,
            "lookups": self.pending.lookups,
            "lookup_retries": self.lookup_retries,
            "lookups_late": self.lookups_late,
            "lookups_resolving": len(self._resolving),  # in flight, including those past their deadline
            "waiting_lookups": len(self.pending),
            "demand_dials": self.dials,
            "idle_closed": self.idle.closed,
            "drops": dict(self.drops),
            "icmp_unreachable": self.icmp_sent,
            "lookup_ms_median": _median(self.lookup_ms) if self.lookup_ms else None,
            "lookup_ms_max": max(self.lookup_ms, default=None),
            "timelines": self.timelines.lines(),
        }


def _describe(packet: bytes) -> str:
    """Source and protocol of a packet, for the log line that says why a tunnel opens."""
    try:
        if packet[0] >> 4 == 4:
            return f"from {ipaddress.IPv4Address(packet[12:16])}, protocol {packet[9]}"
        if packet[0] >> 4 == 6:
            return f"from {ipaddress.IPv6Address(packet[8:24])}, next header {packet[6]}"
    except (IndexError, ValueError):
        pass
    return "not IP"


def _median(values: Iterable[float]) -> float:
    """``statistics.median``, without importing statistics (decimal, fractions: ~0.4 MiB of every node's RSS)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
