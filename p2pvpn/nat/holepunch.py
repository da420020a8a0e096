"""Hole punching: DCUtR (``/libp2p/dcutr``) upgrades a relayed connection to a direct one.

Theory of operation (libp2p specs, relay/DCUtR.md): when a peer reaches us
through a relay, we (the side that accepted the relayed connection) open a
DCUtR stream over it and exchange CONNECT messages carrying each side's
observed public addresses, measuring the round trip; we send SYNC and wait
half a round trip while the peer, on receiving SYNC, dials at once. Both
dials leave from the listen port, so with NATs that map endpoint-
independently (one outside port per inside socket) each side's SYN opens
the way for the other's, and TCP simultaneous open yields one connection.
The security handshake roles are fixed by the spec (the peer that got SYNC
is the Noise initiator), which py-libp2p's ``dial_addr_as_responder``
implements. The tunnel then moves to the direct connection by itself
(``p2pvpn.session.manager``).

We use py-libp2p's ``DCUtRProtocol`` for the exchange and the dials, with
two changes. It first dials the peer's known direct addresses (the spec's
optional "step 0"), which ours did already and which costs a dial timeout;
we skip it. And its "auto-drive" loop, which every 2 s starts a hole punch to
*every* peer with a relayed connection from *both* ends, is switched off.
Two simultaneous sessions for one pair race each other's dials (each side
is initiator in one and responder in the other, so the Noise roles of a
merged connection disagree); the spec says only the side that accepted the
relayed connection starts, and so do we (:meth:`HolePuncher.relayed`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from p2pvpn import libp2p_compat
from p2pvpn.host import Host, relay_of
from p2pvpn.nat.circuit import CircuitLimit

log = logging.getLogger(__name__)

ATTEMPTS = 3              # sessions per relayed connection (the spec's retry count)
FIRST_DELAY = 0.5         # seconds after the relayed connection before the first session
RETRY_DELAY = 5.0         # seconds between sessions
DIAL_TIMEOUT = 5          # seconds for one hole-punch dial
MESSAGE_TIMEOUT = 10      # seconds to wait for the peer's CONNECT/SYNC (py-libp2p: 30)


# py-libp2p's DCUtR without its own initiative: we decide who starts (module doc), and
# our dials already tried the peer's direct addresses (p2pvpn.host.Host._connect).
_DCUtR = libp2p_compat.passive_dcutr_class()


class HolePuncher:
    def __init__(self, host: Host, enabled: bool = True) -> None:
        self.host = host
        self.enabled = enabled
        self.dcutr = _DCUtR(host.libp2p, read_timeout=MESSAGE_TIMEOUT, write_timeout=MESSAGE_TIMEOUT,
                            dial_timeout=DIAL_TIMEOUT)
        self.attempts = 0
        self.succeeded = 0
        self.failed = 0
        self.last: dict[str, Any] | None = None
        self._punching: set[ID] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.dcutr), trio.open_nursery() as nursery:
            await self.dcutr.event_started.wait()
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def relayed(self, relay: ID, peer: ID, limit: CircuitLimit) -> None:
        """We accepted a relayed connection from ``peer``: try to go direct.

        Both sides often dial at once and each accepts a relayed connection;
        then only the side with the smaller peer ID starts, as two sessions
        for one pair spoil each other's dials.
        """
        if not self.enabled or self._nursery is None or peer in self._punching:
            return
        if self._dialed_relayed(peer) and self.host.peer_id.to_bytes() > peer.to_bytes():
            return
        self._punching.add(peer)
        self._nursery.start_soon(self._punch, peer)

    def _dialed_relayed(self, peer: ID) -> bool:
        """Whether we also opened a relayed connection to ``peer`` ourselves."""
        conns = self.host.libp2p.get_network().get_connections(peer)
        return any(relay_of(c) is not None and libp2p_compat.is_outbound(c) for c in conns)

    async def _punch(self, peer: ID) -> None:
        try:
            await trio.sleep(FIRST_DELAY)
            for attempt in range(ATTEMPTS):
                if self.host.has_direct_connection(peer) or peer not in self.host.connected_peers():
                    return
                started = time.monotonic()
                self.attempts += 1
                ok = await self.dcutr.initiate_hole_punch(peer)
                took = time.monotonic() - started
                self.last = {"peer": str(peer), "ok": ok, "seconds": round(took, 2), "at": time.time()}
                if ok:
                    self.succeeded += 1
                    log.info("hole punch to %s succeeded in %.1f s (attempt %d)", peer, took, attempt + 1)
                    return
                self.failed += 1
                log.info("hole punch to %s failed (attempt %d of %d)", peer, attempt + 1, ATTEMPTS)
                await trio.sleep(RETRY_DELAY)
        finally:
            self._punching.discard(peer)

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "attempts": self.attempts,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "last": self.last,
        }
