"""The I/O of spreading (see p2pvpn.spread): push one message to a peer, serve pushes, sync with the DHT.

A service owns one :class:`Spreader` per object. The spreader counts into
the service's counters (``pushed``, ``push_refused_by_peer``,
``push_retried``, ``push_failed``, ``received``, ``push_refused``,
``dht_fetched``, ``dht_refused``, ``dht_published``) so ``status`` reads
as before; what a message means is the service's ``take`` callback, which
raises MembershipError for an invalid one.

A push that got no answer within PUSH_TIMEOUT is sent again on a new
stream (PUSH_ATTEMPTS in all, PUSH_RETRY_DELAY apart): a peer that was too
busy to answer, or a connection that stalled, would otherwise learn a
revocation only at its next DHT read, up to 30 s later (docs/protocol.md
§15.9.2-§15.9.3 promise well inside 10 s). A refusal or a stream error is
an answer and is not retried; taking a message twice is harmless (a copy
that teaches nothing is not forwarded).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio
from libp2p.peer.id import ID
from libp2p.records.validator import Validator

from p2pvpn.discovery.dht import Dht
from p2pvpn.host import STREAM_ERRORS, Host, close_quietly, remote_peer, reset_quietly
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.join import read_message, uvarint
from p2pvpn.spread.rules import Rank, SyncSchedule, beats

log = logging.getLogger(__name__)

PUSH_TIMEOUT = 5.0
PUSH_ATTEMPTS = 3        # tries of one push that times out (see above); bounded
PUSH_RETRY_DELAY = 1.0   # seconds between them
DHT_TIMEOUT = 20.0

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Kind:
    """What differs between the spread objects on the wire: protocol, sizes, the answer's format."""

    name: str                                          # in log lines: "policy", "membership"
    protocol_id: str
    max_message: int                                   # the receiver reads at most this many bytes
    max_answer: int
    encode_answer: Callable[[bool, str], bytes]        # (ok, message) -> answer bytes
    decode_answer: Callable[[bytes], tuple[bool, str]]  # answer bytes -> (ok, message); raises MembershipError


class Spreader(Generic[T]):
    def __init__(self, kind: Kind, host: Host | None, counters: Counter[str]) -> None:
        self.kind = kind
        self.host = host
        self.counters = counters
        self.dht: Dht | None = None
        self.key = ""
        self.schedule = SyncSchedule()

    # -- push ------------------------------------------------------------------

    async def push(self, peer: ID, message: bytes, attempts: int = PUSH_ATTEMPTS) -> None:
        """Send ``message`` to ``peer`` on its own stream; bounded, best effort, counted; a timeout is retried."""
        for attempt in range(attempts):
            if attempt:
                self.counters["push_retried"] += 1
                await trio.sleep(PUSH_RETRY_DELAY)
            if not await self._push_once(peer, message, last=attempt == attempts - 1):
                return

    async def _push_once(self, peer: ID, message: bytes, last: bool) -> bool:
        """One push on a new stream; True when it timed out and may be tried again (not ``last``)."""
        assert self.host is not None
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                stream = await self.host.open_stream(peer, [], self.kind.protocol_id)
                try:
                    await stream.write(uvarint(len(message)) + message)
                    ok, reason = self.kind.decode_answer(await read_message(stream, self.kind.max_answer))
                finally:
                    await close_quietly(stream)
            if not ok:
                self.counters["push_refused_by_peer"] += 1
                log.info("%s refused our %s push: %s", peer, self.kind.name, reason)
                return False
            self.counters["pushed"] += 1
        except trio.TooSlowError as exc:
            if not last:
                log.debug("%s push to %s timed out; trying again", self.kind.name, peer)
                return True
            self.counters["push_failed"] += 1
            log.debug("%s push to %s failed: %r", self.kind.name, peer, exc)
        except (MembershipError, OSError, *STREAM_ERRORS) as exc:
            self.counters["push_failed"] += 1
            log.debug("%s push to %s failed: %r", self.kind.name, peer, exc)
        except Exception as exc:  # py-libp2p's dial and negotiation errors have no common base
            self.counters["push_failed"] += 1
            log.debug("%s push to %s failed: %r", self.kind.name, peer, exc)
        return False

    async def serve(self, stream: Any, take: Callable[[ID, bytes], R]) -> tuple[ID, R] | None:
        """Read one pushed message, ``take`` it, answer; (sender, what take returned) once answered OK."""
        sender = remote_peer(stream)
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                data = await read_message(stream, self.kind.max_message)
            result = take(sender, data)
        except MembershipError as exc:
            self.counters["push_refused"] += 1
            log.info("%s push from %s refused: %s", self.kind.name, sender, exc)
            await self._answer(stream, False, str(exc))
            return None
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            self.counters["push_refused"] += 1
            log.info("%s push from %s failed: %r", self.kind.name, sender, exc)
            await reset_quietly(stream)
            return None
        await self._answer(stream, True, "")  # the sender may now rely on what it pushed
        self.counters["received"] += 1
        return sender, result

    async def _answer(self, stream: Any, ok: bool, message: str) -> None:
        data = self.kind.encode_answer(ok, message)
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                await stream.write(uvarint(len(data)) + data)
        except (trio.TooSlowError, *STREAM_ERRORS):
            await reset_quietly(stream)
            return
        await close_quietly(stream)

    # -- DHT -------------------------------------------------------------------

    def attach_dht(self, dht: Dht, key: str, validator: Validator) -> None:
        """Validate, fetch and publish the object under ``key`` in ``dht`` from now on."""
        dht.extra_validators[key] = validator
        self.dht = dht
        self.key = key
        self.schedule.soon()

    def start_sync_if_due(self, nursery: trio.Nursery, sync: Callable[[], Awaitable[None]]) -> None:
        """Start ``sync`` (which calls :meth:`sync_dht`) when a DHT is attached and a read is due."""
        if self.dht is not None and self.schedule.due(trio.current_time()):
            self.schedule.start()
            nursery.start_soon(sync)

    async def sync_dht(self, open_value: Callable[[bytes], T], rank: Callable[[T], Rank],
                       take: Callable[[T], Awaitable[None]], ours: Callable[[], Rank | None]) -> None:
        """Take in the DHT's copy (``take``); put ours there when it is better (or the DHT has none).

        ``open_value`` validates the DHT's bytes (raises MembershipError);
        ``ours`` is our copy's rank, whose bytes are what we store.
        """
        assert self.dht is not None
        try:
            with trio.move_on_after(DHT_TIMEOUT):
                self.counters["dht_reads"] += 1
                value = await self.dht.get(self.key)  # near first, a walk only when needed (Dht.get)
                theirs: T | None = None
                if value is not None:
                    try:
                        theirs = open_value(value)
                    except MembershipError as exc:
                        self.counters["dht_refused"] += 1
                        log.info("%s in the DHT refused: %s", self.kind.name, exc)
                self.schedule.found(theirs is not None)
                if theirs is not None:
                    self.counters["dht_fetched"] += 1
                    await take(theirs)
                own = ours()
                if own is not None and beats(own, None if theirs is None else rank(theirs)):
                    await self.dht.put(self.key, own[1])
                    self.counters["dht_published"] += 1
        except (OSError, MembershipError, *STREAM_ERRORS) as exc:
            log.info("%s DHT sync failed: %r", self.kind.name, exc)
        except Exception as exc:  # py-libp2p's KadDHT raises assorted types on lookups and stores
            log.info("%s DHT sync failed: %r", self.kind.name, exc)
        finally:
            self.schedule.finished(trio.current_time(), have_own=ours() is not None)
