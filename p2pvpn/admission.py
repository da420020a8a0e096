"""Admission at the libp2p edge: connections and inbound streams, as p2pvpn.limits decides.

Members (``Host.is_member``: static, allowed and discovered peers, bootstrap
peers) pass without touching the strangers' gauges, and their connections
are protected from py-libp2p's pruning; so do relays we hold a slot on
(protected by p2pvpn.nat.reservations). Everyone else holds a
ticket per connection (``conns``, ``conns_per_peer``, ``conns_per_ip``) and
per inbound stream being handled (``streams_per_peer``,
``streams_per_protocol``); past a limit the connection is closed or the
stream reset, and the gauge counts a hit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INetStream, INotifee

from p2pvpn import libp2p_compat
from p2pvpn.limits import Ticket

if TYPE_CHECKING:
    from p2pvpn.host import Host, StreamHandler

log = logging.getLogger(__name__)

MEMBER_TAG = "p2pvpn-member"  # py-libp2p's pruner leaves peers with a protection tag alone
CLOSE_TIMEOUT = 2.0


class ConnectionGate(INotifee):
    """A py-libp2p notifee: each new connection of a non-member takes a ticket, or is closed."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._tickets: dict[int, tuple[Any, Ticket]] = {}  # id(conn) -> (peer, ticket)
        self.closed = 0

    async def connected(self, network: Any, conn: Any) -> None:
        from p2pvpn.host import STREAM_ERRORS, source_key

        peer = conn.muxed_conn.peer_id
        self._recount()
        if self.host.is_member(peer):
            self.host.protect_member(peer)
            return
        if libp2p_compat.is_protected(self.host.libp2p, peer):  # a relay we hold a slot on
            return
        source = source_key(conn)
        ticket = self.host.limits.acquire("conns", ("conns_per_peer", peer), ("conns_per_ip", source))
        if ticket is not None:
            self._tickets[id(conn)] = (peer, ticket)
            return
        self.closed += 1
        log.debug("connection from %s (%s) closed: connection limit", peer, source)
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await conn.close()
            except STREAM_ERRORS as exc:
                log.debug("closing %s: %r", peer, exc)

    async def disconnected(self, network: Any, conn: Any) -> None:
        held = self._tickets.pop(id(conn), None)
        if held is not None:
            held[1].release()

    def _recount(self) -> None:
        """Strangers who became members since they connected (their record arrived) leave the strangers' room."""
        for key, (peer, ticket) in list(self._tickets.items()):
            if self.host.is_member(peer):
                ticket.release()
                del self._tickets[key]
                self.host.protect_member(peer)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        """Not used: streams are admitted where they are handled (:func:`gate_streams`)."""

    async def closed_stream(self, network: Any, stream: Any) -> None:
        """Not used (see :meth:`opened_stream`)."""

    async def listen(self, network: Any, multiaddr: Any) -> None:
        """Not used."""

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        """Not used."""


def gate_streams(host: Host, protocol: str, handler: StreamHandler) -> StreamHandler:
    """``handler`` for inbound ``protocol`` streams, bounded per non-member peer and per protocol."""
    from p2pvpn.host import remote_peer, reset_quietly

    async def gated(stream: INetStream) -> None:
        peer = remote_peer(stream)
        if host.is_member(peer):
            await handler(stream)
            return
        ticket = host.limits.acquire(("streams_per_peer", peer), ("streams_per_protocol", protocol))
        if ticket is None:
            log.debug("%s stream from %s reset: stream limit", protocol, peer)
            await reset_quietly(stream)
            return
        try:
            await handler(stream)
        finally:
            ticket.release()

    return gated
