"""Full-mesh nodes find an on-demand member by its address (docs/protocol.md §12.2, §18.3).

On-demand members provide no "members" key (rules.provided_roles): a
full-mesh node, which learns members from that key, would never learn of
them, and its packets to their addresses would have no route. So in
full-mesh mode the TUN reader hands such a packet here (the egress
``Demand`` hook, ``miss``): it starts one address lookup (the §18.2 walk,
``Discovery.lookup_address``) for the destination, bounded by
rules.MissGate, and the found record goes to the node like any other
(``on_record``: learned, routed, dialed, as full mesh dials every member).

Unlike the on-demand mode nothing is queued: the packet that asked is
dropped and counted by the TUN reader (``no_route``), and the sender's
next one (TCP's SYN retransmission, ping's next echo) takes the tunnel.
A full-mesh node keeps reading "members" for the full-mesh members.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable

import trio

from p2pvpn.discovery.record import NodeRecord
from p2pvpn.discovery.rules import MissGate
from p2pvpn.host import STREAM_ERRORS
from p2pvpn.session.ondemand import LOOKUP_TIMEOUT
from p2pvpn.session.peer import Peer

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[Address, "dict[str, object] | None"], Awaitable[NodeRecord | None]]


class MeshLookups:
    """The egress ``Demand`` hook of a full-mesh node: a lookup per unknown overlay destination, nothing queued."""

    def __init__(self, in_overlay: Callable[[bytes], bool], resolve: Resolve, gate: MissGate | None = None,
                 timeout: float = LOOKUP_TIMEOUT) -> None:
        self.in_overlay = in_overlay
        self.resolve = resolve
        self.gate = gate or MissGate()
        self.timeout = timeout
        self.counts: dict[str, int] = {"started": 0, "found": 0, "missing": 0, "refused": 0}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the lookups run in, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def miss(self, destination: bytes, packet: bytes) -> bool:
        """Start a lookup if the gate lets one; False always: the caller drops and counts the packet (no_route)."""
        if self._nursery is None or not self.in_overlay(destination):
            return False
        if self.gate.start(destination, trio.current_time()):
            self.counts["started"] += 1
            self._nursery.start_soon(self._lookup, destination)
        else:
            self.counts["refused"] += 1
        return False

    def wake(self, peer: Peer) -> None:
        """Nothing: a full-mesh node already dials every member it knows."""

    async def _lookup(self, destination: bytes) -> None:
        address = ipaddress.ip_address(destination)
        record = None
        try:
            with trio.move_on_after(self.timeout):
                record = await self.resolve(address, None)
        except (ValueError, *STREAM_ERRORS) as exc:  # a failed lookup is a missing member, counted
            log.debug("address lookup for %s failed: %r", address, exc)
        self.counts["found" if record is not None else "missing"] += 1
        self.gate.ended(destination, trio.current_time(), record is not None)
        log.info("address lookup for %s (full mesh): %s", address,
                 record.peer_id if record is not None else "nothing found")
