"""Finding the network: publish our signed record, find members, keep the peer list current.

Theory of operation (docs/protocol.md, "Node records and the DHT"):
* Bootstrap: connect to the configured bootstrap peers and fill the DHT
  routing table; retried with backoff until one answers, then refreshed.
* Announce: every TTL/2 we seal a NodeRecord with a fresh sequence number
  (milliseconds since the epoch, so it grows across restarts without state),
  store it under /p2pvpn/<network>/node/<peer-id> and re-provide the
  membership key in full-mesh mode (and role keys when we are a relay or
  exit; rules.provided_roles).
* Find: every ``interval`` seconds we ask for the membership providers,
  fetch each provider's record, verify it (signature, peer ID, network,
  expiry, overlay addresses) and hand it to ``on_record``. A peer whose last
  valid record has expired is handed to ``on_expired`` and forgotten.
* On demand (``in_use`` given, docs/protocol.md §18): no round asks for the
  providers or fetches every member's record. A member is found when a
  packet names its overlay address (``lookup_address``: one address key,
  §18.2); a round only refreshes the records of members we have a tunnel
  with, so an idle node's rounds cost nothing whatever the network's size.
  Members also store their record under their address keys, in both modes.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn.addressing import OverlayAddresses
from p2pvpn.discovery import record as rec
from p2pvpn.discovery.address import address_key, keys_of
from p2pvpn.discovery.dht import Dht
from p2pvpn.discovery.rules import EARLY_JITTER, PERIOD_JITTER, PublishSchedule, provided_roles
from p2pvpn.host import STREAM_ERRORS
from p2pvpn.limits import ResourceManager

log = logging.getLogger(__name__)

MAX_MEMBERS = 1000           # records fetched per round, at most
FETCH_CONCURRENCY = 16


@dataclass
class Known:
    record: rec.NodeRecord
    fetched: float


TABLE_CHECK = 2.0  # seconds between looks at the routing table's size (PublishSchedule.grown)
# The first publish waits (at most this long) for the first bootstrap attempt: its walks need a routing table.
# Published with an empty one, the records went nowhere useful, and under load that publish took 30 s, during
# which the next one (the one that places them) could not start (bench/scale.py net, docs/performance.md).
FIRST_PUBLISH_WAIT = 10.0


class Discovery:
    def __init__(
        self,
        dht: Dht,
        key_pair: KeyPair,
        peer_id: ID,
        network: str,
        local: Callable[[], OverlayAddresses],
        addrs: Callable[[], Sequence[multiaddr.Multiaddr]],
        bootstrap: Sequence[tuple[ID, multiaddr.Multiaddr]],
        on_record: Callable[[rec.NodeRecord, str], None],
        on_expired: Callable[[ID], None],
        ttl: float = 300.0,
        interval: float = 10.0,
        roles: Callable[[], dict[str, object]] | None = None,
        clock: Callable[[], float] = time.time,
        member: bool = True,
        needs_refresh: Callable[[ID], bool] | None = None,
        limits: ResourceManager | None = None,
        in_use: Callable[[ID], bool] | None = None,
        track_roles: Sequence[str] = (),
        publish_jitter: tuple[float, float] = (EARLY_JITTER, PERIOD_JITTER),
    ) -> None:
        self.dht = dht
        self.key_pair = key_pair
        self.peer_id = peer_id
        self.network = network
        self._local = local
        self._addrs = addrs
        self.bootstrap_peers = list(bootstrap)
        self._on_record = on_record
        self._on_expired = on_expired
        self.ttl = ttl
        self.interval = interval
        self._roles = roles or (lambda: {})
        self._clock = clock
        self.member = member  # provide the membership key (a headless relay is no member: no tunnels to it)
        # Peers we cannot reach: ask the network for their record, not just our stored copy.
        self._needs_refresh = needs_refresh or (lambda peer_id: False)
        self.known: dict[ID, Known] = {}
        # Lookups others make us do (a caller we don't know, a relay client) share one gauge, "lookups".
        self.limits = limits or dht.host.limits
        self.rejected = 0
        self.rounds = 0
        self.last_published = 0.0
        self._republish = trio.Event()
        self._bootstrapped = trio.Event()  # the first bootstrap attempt ended (set at once without bootstrap peers)
        self._published_once = False  # the first publish has begun (a bootstrap answering later asks for another)
        if not self.bootstrap_peers:
            self._bootstrapped.set()
        self._reason = "asked"  # why _republish was set
        self._publishing = False
        self.publishes: dict[str, int] = {"timer": 0, "asked": 0, "table_grew": 0}  # why each publish ran
        self._schedule: PublishSchedule | None = None
        # On demand: the members whose records rounds keep fresh (those with a tunnel); None: every member.
        self.in_use = in_use
        self.track_roles = tuple(track_roles)  # on demand: roles whose providers' records rounds still fetch ("exit")
        self.address_lookups: dict[str, int] = {"found": 0, "missing": 0, "invalid": 0}
        self.publish_jitter = publish_jitter  # PublishSchedule's (early, period) jitter; tests of exact times: (0, 0)

    # -- our record ------------------------------------------------------------

    def own_record(self) -> rec.NodeRecord:
        now = self._clock()
        local = self._local()
        roles = self._roles()
        return rec.NodeRecord(
            peer_id=self.peer_id,
            network=self.network,
            ipv4=local.ipv4,
            ipv6=local.ipv6,
            address_index=local.index,
            addrs=rec.usable_addrs(self._addrs()),
            relay_addrs=tuple(roles.get("relay_addrs", ()))[: rec.MAX_ADDRS],  # type: ignore[arg-type]
            relay=roles.get("relay"),  # type: ignore[arg-type]
            exit=roles.get("exit"),  # type: ignore[arg-type]
            certificate=roles.get("certificate", b""),  # type: ignore[arg-type]
            seq=int(now * 1000),
            expires=int(now + self.ttl),
        )

    def republish_soon(self) -> None:
        """Our record changed (address moved, role changed): publish without waiting."""
        self._asked_to_publish("asked")

    # -- loops -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._bootstrap_loop)
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._table_watch)
            nursery.start_soon(self._find_loop)
            task_status.started()

    async def _bootstrap_loop(self) -> None:
        """Keep at least one bootstrap connection; retry with backoff, then check now and then."""
        delay = 1.0
        while True:
            if self.bootstrap_peers and self.dht.routing_table_size() == 0:
                answered = await self.dht.bootstrap(self.bootstrap_peers)
                if answered:
                    delay = 1.0
                    if self._published_once:  # else the first publish, waiting for this, follows now
                        self.republish_soon()
                else:
                    delay = min(delay * 2, 30.0)
            else:
                delay = 30.0
            self._bootstrapped.set()
            await trio.sleep(delay)

    async def _announce_loop(self) -> None:
        """Publish at start, then when PublishSchedule's timer says, when asked, or when the table grew."""
        early_jitter, period_jitter = self.publish_jitter
        self._schedule = schedule = PublishSchedule(period=self.ttl / 2, early_jitter=early_jitter,
                                                    period_jitter=period_jitter)
        reason = "start"
        with trio.move_on_after(FIRST_PUBLISH_WAIT):
            await self._bootstrapped.wait()
        self._published_once = True
        while True:
            self._republish = trio.Event()  # a change while we publish asks for the next publish
            self._publishing = True
            table = self.dht.routing_table_size()  # the table the walks of this publish start from
            began, failures = trio.current_time(), self.dht.publish_failures
            record = self.own_record()
            # "members" only in full-mesh mode (rules.provided_roles, docs/protocol.md §12.2)
            roles = provided_roles(self.member, self.in_use is not None,
                                   [r for r in ("relay", "exit") if getattr(record, r) is not None])
            try:
                sealed = rec.seal(record, self.key_pair.private_key)
                address_keys = keys_of(self.network, record) if self.member else []
                await self.dht.publish(self.peer_id, sealed, roles, address_keys)
                self.last_published = self._clock()
            except rec.RecordError as exc:  # a bug in what we put in it; say so, keep running
                log.error("our own record is invalid, not published: %s", exc)
            except (trio.TooSlowError, ValueError, *STREAM_ERRORS) as exc:
                log.info("publishing our record failed: %s", type(exc).__name__)
            schedule.published(trio.current_time(), table)
            self._publishing = False
            log.info("published our records (%s): routing table %d -> %d peers, %.1f s, %d stores failed; next by "
                     "timer in %.0f s", reason, table, self.dht.routing_table_size(), trio.current_time() - began,
                     self.dht.publish_failures - failures, schedule.timer_at - trio.current_time())
            reason = "timer"
            with trio.move_on_at(schedule.timer_at):
                await self._republish.wait()
                reason = self._reason
                await trio.sleep(0.5)  # let a burst of changes settle into one record
            self.publishes[reason] += 1

    def _asked_to_publish(self, reason: str) -> None:
        if not self._republish.is_set():
            self._reason = reason
        self._republish.set()

    async def _table_watch(self) -> None:
        """Ask for a publish when the routing table has grown since the last one (PublishSchedule.grown)."""
        while True:
            await trio.sleep(TABLE_CHECK)
            schedule = self._schedule
            if schedule is not None and not self._publishing \
                    and schedule.grown(trio.current_time(), self.dht.routing_table_size()):
                self._asked_to_publish("table_grew")

    async def _find_loop(self) -> None:
        while True:
            await self.find_once()
            await trio.sleep(self.interval)

    async def find_once(self) -> None:
        """One discovery round: providers -> records -> verified -> handed over; expire the rest."""
        self.rounds += 1
        if self.in_use is not None:
            await self._refresh_in_use()
            return
        started = trio.current_time()
        try:
            providers = await self.dht.find_providers("members")
        except STREAM_ERRORS as exc:
            log.debug("find_providers failed: %r", exc)
            providers = []
        found = trio.current_time()
        peers = [p.peer_id for p in providers if p.peer_id != self.peer_id][:MAX_MEMBERS]
        peers = [p for p in peers if self._due(p)]
        limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            for peer_id in peers:
                nursery.start_soon(self._fetch, peer_id, limiter)
        self._expire()
        log.debug("round %d: %d providers in %.1f s, records in %.1f s; %d members known", self.rounds, len(peers),
                  found - started, trio.current_time() - found, len(self.known))

    async def _refresh_in_use(self) -> None:
        """An on-demand round: refresh the due records of members we have tunnels with; expire the rest."""
        peers = [p for p in self.known if self.in_use is not None and self.in_use(p) and self._due(p)]
        for role in self.track_roles:  # a few providers (exits), not the members: bounded by the role's size
            try:
                providers = await self.dht.find_providers(role)
            except STREAM_ERRORS as exc:
                log.debug("find_providers(%s) failed: %r", role, exc)
                continue
            peers += [p.peer_id for p in providers[:20] if p.peer_id != self.peer_id and p.peer_id not in peers
                      and self._due(p.peer_id)]
        if peers:
            limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)
            async with trio.open_nursery() as nursery:
                for peer_id in peers:
                    nursery.start_soon(self._fetch, peer_id, limiter)
        self._expire()

    async def lookup_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                             trace: dict[str, object] | None = None) -> rec.NodeRecord | None:
        """The member holding an overlay address, from its address record (§18.2); handed to ``on_record``.

        None if no valid record names it (or it is ours). The caller bounds the time. ``trace``, if
        given, gets what the lookup did (Dht.get_address).
        """
        key = address_key(self.network, address)
        sealed = await self.dht.get_address(key, trace)
        if sealed is None:
            self.address_lookups["missing"] += 1
            return None
        try:
            record = self.dht.address_validator.open(key, sealed)
        except rec.RecordError as exc:
            self.address_lookups["invalid"] += 1
            self.rejected += 1
            log.info("rejected address record under %s: %s", key, exc)
            return None
        if record.peer_id == self.peer_id:
            return None
        self.address_lookups["found"] += 1
        previous = self.known.get(record.peer_id)
        if previous is None or previous.record.seq <= record.seq:
            self.known[record.peer_id] = Known(record, self._clock())
        self._on_record(self.known[record.peer_id].record, "lookup")
        return self.known[record.peer_id].record

    def _due(self, peer_id: ID) -> bool:
        """Whether this round should fetch the member's record again.

        Not while our verified copy is in the first half of its life: its
        owner republishes every TTL/2, so nothing newer is due before, and
        fetching all members every round made each round cost one request
        per member per node (25 nodes: ~60 requests/s). A member we want a
        tunnel to but cannot reach is asked every round: its addresses may
        have changed (new relay slots).
        """
        known = self.known.get(peer_id)
        if known is None or self._needs_refresh(peer_id):
            return True
        now = self._clock()
        life = known.record.expires - known.fetched
        return known.record.expires - now < max(life / 2, 3 * self.interval)

    async def lookup(self, peer_id: ID) -> rec.NodeRecord | None:
        """Fetch and verify one peer's record now (an unknown peer is dialing us); None past ``lookups``."""
        ticket = self.limits.acquire("lookups")
        if ticket is None:
            return None
        try:
            await self._fetch(peer_id, trio.CapacityLimiter(1))
        finally:
            ticket.release()
        known = self.known.get(peer_id)
        return known.record if known else None

    async def fetch_record(self, peer_id: ID, caused_by_peer: bool = False) -> rec.NodeRecord | None:
        """Fetch and verify one peer's record without treating it as a member (relays, relay clients).

        ``caused_by_peer``: another peer made us ask (a relay client): then
        None past ``lookups`` lookups in flight. Our own needs are not bounded here.
        """
        ticket = self.limits.acquire("lookups") if caused_by_peer else None
        if caused_by_peer and ticket is None:
            return None
        try:
            sealed = await self.dht.get_record(peer_id)
        except STREAM_ERRORS as exc:
            log.debug("get_record %s failed: %r", peer_id, exc)
            return None
        finally:
            if ticket is not None:
                ticket.release()
        return self._open(peer_id, sealed) if sealed is not None else None

    def _open(self, peer_id: ID, sealed: bytes) -> rec.NodeRecord | None:
        try:
            # The DHT's validator: in an owned network it also judges the certificate (and counts refusals).
            record = self.dht.validator.open(peer_id, sealed, now=self._clock())
        except rec.RecordError as exc:
            self.rejected += 1
            log.info("rejected record of %s: %s", peer_id, exc)
            return None
        return record

    async def _fetch(self, peer_id: ID, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                sealed = await self.dht.get_record(peer_id, refresh=self._needs_refresh(peer_id))
            except STREAM_ERRORS as exc:
                log.debug("get_record %s failed: %r", peer_id, exc)
                return
        if sealed is None:
            return
        record = self._open(peer_id, sealed)
        if record is None:
            return
        previous = self.known.get(peer_id)
        if previous is not None and previous.record.seq > record.seq:
            return  # an older copy from a lagging DHT node
        self.known[peer_id] = Known(record, self._clock())
        self._on_record(record, "dht")

    def _expire(self) -> None:
        now = self._clock()
        for peer_id, known in list(self.known.items()):
            if known.record.expires <= now:
                del self.known[peer_id]
                log.info("record of %s expired", peer_id)
                self._on_expired(peer_id)
