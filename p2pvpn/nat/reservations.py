"""While we are unreachable: keep slots on a few relays and publish our addresses through them.

Theory of operation:
* The keeper is switched on by reachability (PRIVATE) and off again
  (PUBLIC), which drops every slot.
* Every CHECK seconds it drops slots whose relay connection closed (a slot
  lives with the connection: the connections open when it was granted are
  remembered, so a relay that restarted between two checks counts as lost) or
  that expired, renews slots close to their
  expiry, and, while it holds fewer than ``want``, asks ``find`` for relay
  candidates (the DHT's providers of the relay role) and reserves on the
  first ones that accept. A relay that failed is not tried again for a
  while (30 s doubling to 5 min).
* Whenever the set of slots changes, ``on_change`` is called: the node
  republishes its record, whose ``relay_addrs`` are :meth:`relay_addrs`.
* Relay connections are protected from py-libp2p's connection pruning:
  losing one loses the slot.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID

from p2pvpn import libp2p_compat
from p2pvpn.discovery import record as rec
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.nat import circuit as c

log = logging.getLogger(__name__)

CHECK = 2.0                  # seconds between checks of our slots
SEARCH_EVERY = 5.0           # seconds between searches while we hold fewer slots than wanted
RENEW_BEFORE = 300.0         # renew a slot this many seconds before it expires
BACKOFF_MIN, BACKOFF_MAX = 5.0, 300.0  # a relay that failed is retried after 5 s, 10 s, ... 5 min
RESERVE_TIMEOUT = 10.0       # connecting to a relay and reserving, seconds
PROTECT_TAG = "p2pvpn-relay"

FindRelays = Callable[[], Awaitable[Sequence[tuple[ID, Sequence[multiaddr.Multiaddr]]]]]


class RelayKeeper:
    def __init__(self, host: Host, find: FindRelays, want: int, on_change: Callable[[], None]) -> None:
        self.host = host
        self._find = find
        self.want = want
        self._on_change = on_change
        self.reservations: dict[ID, c.Reservation] = {}
        self._dialed: dict[ID, list[multiaddr.Multiaddr]] = {}  # where we reached each relay
        self._held_on: dict[ID, list[Any]] = {}  # the connections open when each slot was granted
        self.enabled = False
        self.always = False  # hold slots even while reachable (an exit, for clients that reach it only via relays)
        self._wake = trio.Event()
        self._next_search = 0.0
        self._backoff: dict[ID, tuple[float, float]] = {}  # relay -> (retry at, current delay)
        self.failures: Counter[str] = Counter()
        # Set in an owned network: show the relay our certificate before reserving (docs/protocol.md §15.9.4).
        self.before_reserve: Callable[[ID], Awaitable[None]] | None = None

    def enable(self, on: bool) -> None:
        on = on or self.always
        if on != self.enabled:
            self.enabled = on
            self._next_search = 0.0
            self._wake.set()

    def relay_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our ``/p2p-circuit`` addresses, for our record (relays with live slots only).

        Only relay addresses a record may carry (docs/protocol.md §12.5), at
        most MAX_ADDRS in all, spread over the relays.
        """
        per_relay: list[list[multiaddr.Multiaddr]] = []
        for relay, rsv in self.reservations.items():
            bases = rec.usable_addrs(rsv.relay_addrs) or rec.usable_addrs(self._dialed.get(relay, []))
            per_relay.append([multiaddr.Multiaddr(f"{a}/p2p/{relay}/p2p-circuit") for a in bases])
        out = [addr for group in itertools.zip_longest(*per_relay) for addr in group if addr is not None]
        return out[: rec.MAX_ADDRS]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            changed = False
            if not self.enabled:
                changed = self._drop_all()
            else:
                changed |= self._drop_dead()
                changed |= await self._renew()
                if len(self.reservations) < self.want and time.monotonic() >= self._next_search:
                    changed |= await self._fill()
                    self._next_search = time.monotonic() + SEARCH_EVERY
            if changed:
                self._on_change()
            self._wake = trio.Event()
            with trio.move_on_after(CHECK):
                await self._wake.wait()

    def _drop_all(self) -> bool:
        if not self.reservations:
            return False
        for relay in list(self.reservations):
            self._forget(relay, "we are reachable")
        return True

    def _drop_dead(self) -> bool:
        """Drop slots whose connection closed or that expired.

        Asking whether the relay is connected is not enough: a relay that
        restarted between two checks is connected again over a new connection,
        and its new self knows nothing of our slot (it refuses circuits to us
        NO_RESERVATION while we would keep advertising it).
        """
        now = time.time()
        dead = [r for r, rsv in self.reservations.items()
                if not self.host.any_open(self._held_on.get(r, [])) or rsv.expire <= now]
        for relay in dead:
            self._forget(relay, "connection to the relay closed")
            self._fail(relay, "lost")
        return bool(dead)

    def _forget(self, relay: ID, why: str) -> None:
        self.reservations.pop(relay, None)
        self._held_on.pop(relay, None)
        self._unprotect(relay)
        log.info("reservation on relay %s dropped: %s", relay, why)

    async def _renew(self) -> bool:
        changed = False
        for relay, rsv in list(self.reservations.items()):
            if rsv.expire - time.time() > RENEW_BEFORE:
                continue
            try:
                with trio.fail_after(RESERVE_TIMEOUT):
                    self.reservations[relay] = await c.reserve(self.host, relay)
                self._held_on[relay] = self.host.connections_to(relay)
            except (trio.TooSlowError, c.CircuitError, *STREAM_ERRORS) as exc:
                self._forget(relay, f"renewal failed: {exc}")
                self._fail(relay, "renew")
                changed = True
        return changed

    async def _fill(self) -> bool:
        try:
            candidates = await self._find()
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("finding relays failed: %r", exc)
            return False
        log.debug("relay candidates: %s", [str(r) for r, _ in candidates])
        changed = False
        now = time.monotonic()
        connected = set(self.host.connected_peers())
        for relay, addrs in candidates:
            if len(self.reservations) >= self.want:
                break
            if relay == self.host.peer_id or relay in self.reservations:
                continue
            if self._backing_off(relay, now, relay in connected):
                continue
            if await self._reserve(relay, list(addrs)):
                changed = True
        return changed

    async def _reserve(self, relay: ID, addrs: list[multiaddr.Multiaddr]) -> bool:
        try:
            with trio.fail_after(RESERVE_TIMEOUT):
                await self.host.connect(relay, addrs)
                if self.before_reserve is not None:
                    await self.before_reserve(relay)
                rsv = await c.reserve(self.host, relay)
        except (trio.TooSlowError, c.CircuitError, *STREAM_ERRORS) as exc:
            log.info("no reservation on relay %s: %s", relay, exc if str(exc) else type(exc).__name__)
            self._fail(relay, "reserve")
            return False
        self.reservations[relay] = rsv
        self._held_on[relay] = self.host.connections_to(relay)
        self._dialed[relay] = addrs
        self._backoff.pop(relay, None)
        self._protect(relay)
        log.info("reserved a slot on relay %s until %s%s", relay, time.strftime("%H:%M:%S", time.localtime(rsv.expire)),
                 "" if rsv.limit.unlimited else f" (limit {rsv.limit})")
        return True

    def _backing_off(self, relay: ID, now: float, connected: bool) -> bool:
        """Whether ``relay`` failed too recently to try again.

        A relay we are connected to again (it restarted and came back) waits only BACKOFF_MIN after its
        last failure, whatever the doubling reached while it was down: its members want their slots back.
        """
        retry_at, delay = self._backoff.get(relay, (0.0, 0.0))
        if connected:
            retry_at = min(retry_at, retry_at - delay + BACKOFF_MIN)
        return retry_at > now

    def _fail(self, relay: ID, what: str) -> None:
        self.failures[what] += 1
        _, last = self._backoff.get(relay, (0.0, 0.0))
        delay = min(max(last * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._backoff[relay] = (time.monotonic() + delay, delay)

    def _protect(self, relay: ID) -> None:
        libp2p_compat.protect_peer(self.host.libp2p, relay, PROTECT_TAG)

    def _unprotect(self, relay: ID) -> None:
        libp2p_compat.unprotect_peer(self.host.libp2p, relay, PROTECT_TAG)

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "want": self.want,
            "relays": [
                {"relay": str(r), "expires": rsv.expire, "limited": not rsv.limit.unlimited}
                for r, rsv in self.reservations.items()
            ],
            "failures": dict(self.failures),
        }
