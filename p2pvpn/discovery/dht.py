"""Our private Kademlia DHT: py-libp2p's KadDHT under our own protocol ID, accepting only our records.

py-libp2p 0.8.1 takes a ``protocol_prefix`` argument but ignores it on the
wire: every module sends and serves the module-level ``PROTOCOL_ID``
(/ipfs/kad/1.0.0). Speaking /ipfs/kad would mix our records into the public
IPFS DHT, so we rebind that constant in the modules that use it, once per
process, before any DHT exists (p2pvpn.libp2p_compat.use_kad_protocol_id). This is process-wide by nature; p2pvpn runs
one DHT per process. go-libp2p gets the same with ``dht.ProtocolPrefix("/p2pvpn")``.

Strict validation is on and the only namespace is "p2pvpn", so a node stores
nothing but signed NodeRecords of its own network (docs/protocol.md), and
provider records only for its network's role keys (py-libp2p bounds
providers per key, not keys; a flood of fresh identities would grow the
store without end). Refusals of both count in ``rejected``.

Only DHT servers belong in a routing table (Kademlia spec: "nodes add
another node to their routing table if and only if that node operates in
server mode"). py-libp2p breaks that in two ways, and nodes behind NATs
(clients, undialable at the addresses they have) then poison every
lookup: each query waits for them until it times out.
* Its KAD stream handler adds every peer that sends it a request, with the
  server check skipped ("peer initiated a KAD stream, so they MUST support
  KAD server mode"); clients send requests too. We wrap ``KadDHT.add_peer``
  so that such a peer is added only if identify says it serves our KAD
  protocol.
* It never removes a peer that stops serving (a node that moved to client
  mode when AutoNAT found it behind a NAT). We announce our own switches
  with an identify push, and a hygiene pass drops peers whose identify no
  longer lists the protocol and adds connected peers that do. The pass
  runs HYGIENE_SETTLE s after a new connection (once identify has told us
  its protocols), and otherwise every HYGIENE_INTERVAL s (jittered) for
  peers that switched on a connection we already had: an idle node does
  not walk its table and connections every few seconds.
* Lookups in a small table also ask every peer the peerstore knows (see
  ``_use_our_protocol_id``).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.records.validator import Validator
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError

from p2pvpn import libp2p_compat
from p2pvpn.discovery import record as rec
from p2pvpn.discovery import walk
from p2pvpn.discovery.address import AddressValidator, is_address_key
from p2pvpn.discovery.rules import ADDRESS_CONNECTED_ASK, ADDRESS_FIRST_ASK, first_asks
from p2pvpn.host import STREAM_ERRORS, Host

log = logging.getLogger(__name__)

PROTOCOL_PREFIX = "/p2pvpn"
PROTOCOL_ID = TProtocol(f"{PROTOCOL_PREFIX}/kad/1.0.0")
QUERY_TIMEOUT = 20.0
HYGIENE_INTERVAL = 30.0  # seconds between routing-table checks without a new connection (module doc)
HYGIENE_SETTLE = 2.0  # seconds after a new connection before the check (identify has run)
HYGIENE_JITTER = 0.2  # ± this fraction of HYGIENE_INTERVAL, so nodes started together do not check in step
PROVIDER_ADDR_TTL = 600  # seconds the addresses a provider record carried stay in the peerstore
CLOSEST_REUSE = 30.0    # seconds a walk's closest peers of a provider key are asked again without a new walk
OWNER_HEAD_START = 1.0  # seconds the owner has to answer before a lookup starts alongside
OWNER_TIMEOUT = 3.0     # seconds for the owner to answer GET_VALUE for its own record
REFRESH_AFTER = 5.0     # seconds a valid stored record is trusted before the network is asked again
MAX_PROVIDERS = 1000
BUCKET_SIZE = 20  # k: providers announce to the k peers closest to the key
ADDRESS_FIRST_WAIT = 1.0  # seconds a first round has (Dht.get: before a lookup; get_address: before its walk ignores it)
WALK_RPC_TIMEOUT = 3.0  # seconds one GET_VALUE of an iterative value lookup has before its peer counts as failed
WALK_TIMEOUT = 10.0     # seconds an iterative value lookup (Dht._walk) runs at most
GET_WALK_AFTER = 300.0  # seconds Dht.get trusts an iterative lookup that found nothing (the closest are asked still)


def _use_our_protocol_id() -> None:
    """KadDHT under our protocol ID, and its lookups' fallback only for an empty table (libp2p_compat)."""
    libp2p_compat.use_kad_protocol_id(PROTOCOL_ID)
    # With fewer than MIN_PEERS_THRESHOLD (5) peers in the routing table, py-libp2p's
    # lookups also query every connected peer and every peer the peerstore has ever
    # heard of, DHT server or not, and add them all to the table; in a small network
    # (a couple of relays) that is every lookup, and each unreachable node behind a NAT
    # costs a dial timeout per round. Fall back only when the table is empty.
    libp2p_compat.set_kad_lookup_fallback(1)


class Dht:
    """The DHT as the node uses it: bootstrap, publish our record, find members and roles."""

    def __init__(self, host: Host, network: str, server: bool, validator: rec.RecordValidator | None = None) -> None:
        _use_our_protocol_id()
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.records.validator import NamespacedValidator

        self.host = host
        self.network = network
        self.server = server
        self.rejected = 0  # records refused: invalid ones (our store, a PUT_VALUE, an answer), providers of foreign keys
        # An owned network's node passes one that checks certificates (docs/protocol.md §15.9.4).
        self.validator = validator or rec.RecordValidator(network)
        self.address_validator = AddressValidator(self.validator)  # address keys (docs/protocol.md §18.2)
        # Other kinds of value in our namespace, by key (e.g. the revocation list, docs/protocol.md §15.9.4).
        self.extra_validators: dict[str, Validator] = {}
        namespaced = NamespacedValidator({"p2pvpn": _ByKey(self)}, strict_validation=True)
        self.kad = KadDHT(
            host.libp2p,
            DHTMode.SERVER if server else DHTMode.CLIENT,
            validator=namespaced,
            validator_changed=True,
            protocol_prefix=TProtocol(PROTOCOL_PREFIX),
            strict_validation=True,
        )
        self._nursery: trio.Nursery | None = None
        self._connected = trio.Event()  # a new connection since the last hygiene pass
        self.hygiene_passes = 0
        # How reads were answered (status: discovery.reads): get_* for Dht.get, address_* for get_address.
        self.reads: Counter[str] = Counter()
        self.publish_failures = 0  # stores and provides of our own that raised (Dht.publish)
        self._asked: dict[str, float] = {}  # record key -> when we last asked the network
        self._walked_empty: dict[str, float] = {}  # Dht.get key -> when an iterative lookup last found nothing
        self._closest: dict[bytes, tuple[float, int, list[ID]]] = {}  # provider key -> (when, table size, closest)
        self._check_servers()
        # We serve provider records for our network's role keys only; anything else is a flood (counted).
        ours = {bytes.fromhex(rec.provider_key(network, role)) for role in rec.ROLES}
        libp2p_compat.filter_kad_providers(self.kad, ours.__contains__, self._refused_provider)
        if server:  # KadDHT set its own handler; ours bounds strangers' streams (p2pvpn.admission)
            host.set_handler(PROTOCOL_ID, self.kad.handle_stream)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from libp2p.tools.anyio_service import background_trio_service

        events = _ConnectionEvents(lambda: self._connected.set())
        network = self.host.libp2p.get_network()
        async with background_trio_service(self.kad), trio.open_nursery() as nursery:
            self._nursery = nursery
            network.register_notifee(events)
            nursery.start_soon(self._hygiene_loop)
            try:
                yield
            finally:
                network.remove_notifee(events)
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _refused_provider(self) -> None:
        self.rejected += 1

    def _check_servers(self) -> None:
        """Make ``KadDHT.add_peer`` refuse, for inbound requests, peers that are not DHT servers."""
        # A client asked us something (check skipped): it does not belong in the table.
        libp2p_compat.filter_kad_add_peer(self.kad, lambda peer_id, skipped: skipped and self._serves(peer_id) is not True)

    def _serves(self, peer_id: ID) -> bool | None:
        """Whether identify says the peer serves our KAD protocol (None: identify has not told us)."""
        try:
            protocols = self.host.libp2p.get_peerstore().get_protocols(peer_id)
        except Exception:  # PeerStoreError for a peer the store does not know
            return None
        return (str(PROTOCOL_ID) in protocols) if protocols else None

    async def _hygiene_loop(self) -> None:
        """A hygiene pass after each burst of new connections, else every HYGIENE_INTERVAL s (module doc)."""
        while True:
            with trio.move_on_after(HYGIENE_INTERVAL * random.uniform(1 - HYGIENE_JITTER, 1 + HYGIENE_JITTER)):
                await self._connected.wait()
                await trio.sleep(HYGIENE_SETTLE)  # identify of the new connection(s) has run by now
            self._connected = trio.Event()
            await self.hygiene_pass()

    async def hygiene_pass(self) -> None:
        """Drop table peers that stopped serving our KAD protocol; add connected peers that serve it."""
        table = self.kad.routing_table
        self.hygiene_passes += 1
        for peer_id in table.get_peer_ids():
            if self._serves(peer_id) is False:
                table.remove_peer(peer_id)
                log.debug("DHT: %s no longer serves the DHT; removed from the routing table", peer_id)
        for peer_id in self.host.connected_peers():
            if self._serves(peer_id) and not table.peer_in_table(peer_id):
                try:
                    await table.add_peer(peer_id, skip_server_mode_check=True)
                except STREAM_ERRORS as exc:
                    log.debug("DHT: adding %s failed: %r", peer_id, exc)

    async def bootstrap(self, peers: list[tuple[ID, multiaddr.Multiaddr]]) -> int:
        """Connect to bootstrap peers and seed the routing table; returns how many answered."""
        ok = 0
        for peer_id, addr in peers:
            if peer_id == self.host.peer_id:
                continue
            try:
                with trio.fail_after(QUERY_TIMEOUT):
                    self.host.libp2p.get_peerstore().add_addrs(peer_id, [addr], 3600)
                    if peer_id not in self.host.connected_peers():
                        await self.host.libp2p.connect(PeerInfo(peer_id, [addr]))
                    await self.kad.add_peer(peer_id)
                ok += 1
            except (trio.TooSlowError, *STREAM_ERRORS) as exc:
                log.info("bootstrap %s unreachable: %s", peer_id, type(exc).__name__)
        if ok:
            with trio.move_on_after(QUERY_TIMEOUT):
                await self.kad.refresh_routing_table()
        return ok

    async def add_peer(self, peer_id: ID) -> None:
        """A peer we met some other way (a tunnel, mDNS) also seeds the routing table."""
        try:
            await self.kad.add_peer(peer_id)
        except STREAM_ERRORS as exc:
            log.debug("add_peer %s: %r", peer_id, exc)

    def set_server(self, server: bool) -> None:
        """Serve DHT queries (reachable) or only ask (behind a NAT), switching at run time.

        Not ``KadDHT.switch_mode``: switching to client mode there also empties
        the routing table (``cleanup_routing_table``), leaving a client that
        cannot ask anyone until it bootstraps again. A client needs its routing
        table; only the stream handler goes.
        """
        if server == self.server:
            return
        self.server = server
        libp2p_compat.set_kad_mode(self.kad, server)
        if server:
            self.host.set_handler(PROTOCOL_ID, self.kad.handle_stream)
        else:
            self.host.libp2p.remove_stream_handler(PROTOCOL_ID)
        log.info("DHT switched to %s mode", "server" if server else "client")
        # Tell connected peers (identify push carries our protocol list) so they fix their tables.
        if self._nursery is not None:
            self._nursery.start_soon(libp2p_compat.identify_pusher(self.host.libp2p))

    def routing_table_size(self) -> int:
        return self.kad.get_routing_table_size()

    async def publish(self, peer_id: ID, sealed: bytes, roles: list[str], address_keys: Sequence[str] = ()) -> None:
        """Store our record under its address keys and its own key, then provide each role key.

        Address keys first: they are what a first packet's lookup needs
        (docs/protocol.md §18.2). One after the other, each bounded by
        QUERY_TIMEOUT and on its own (a failure is counted in
        ``publish_failures`` and stops no other). Not all at once: at 20
        nodes that turned each publish into a burst of ~80 RPCs at every
        node, and store failures grew from 30 to 466 per run (resets under
        load) while tunnels took 1-2 s instead of 0.3 s to come up.
        """

        async def put(key: str) -> None:
            with trio.move_on_after(QUERY_TIMEOUT):
                try:
                    await self.kad.put_value(key, sealed)
                except (ValueError, *STREAM_ERRORS) as exc:  # each store on its own: one failing stops no other
                    self.publish_failures += 1
                    log.info("storing our record under %s failed: %r", key, exc)

        async def provide(role: str) -> None:
            with trio.move_on_after(QUERY_TIMEOUT):
                try:
                    await self.kad.provide(rec.provider_key(self.network, role))
                except (ValueError, *STREAM_ERRORS) as exc:
                    self.publish_failures += 1
                    log.info("providing %s failed: %r", role, exc)

        for key in [*address_keys, rec.record_key(self.network, peer_id)]:
            await put(key)
        for role in roles:
            await provide(role)

    async def find_providers(self, role: str) -> list[PeerInfo]:
        """Providers of a role key: our own store merged with the closest peers' stores.

        py-libp2p's ``find_providers`` returns only the local store as soon as
        it holds any provider, and every member provides the membership key,
        so a DHT server would see only members that happened to announce to
        it. Asking the peers closest to the key (where providers announce)
        finds them all.
        """
        store = self.kad.provider_store
        key = bytes.fromhex(rec.provider_key(self.network, role))
        found: dict[ID, PeerInfo] = {p.peer_id: p for p in store.get_providers(key)}
        with trio.move_on_after(QUERY_TIMEOUT):
            closest = await self._closest_peers(key)
            answered: list[ID] = []

            async def ask(peer_id: ID) -> None:
                with trio.move_on_after(QUERY_TIMEOUT / 2):
                    try:
                        providers = await libp2p_compat.providers_from_peer(self.kad, peer_id, key)
                    except STREAM_ERRORS as exc:
                        log.debug("GET_PROVIDERS from %s failed: %r", peer_id, exc)
                        return
                    answered.append(peer_id)
                    for info in providers:
                        found.setdefault(info.peer_id, info)
                        if info.addrs and info.peer_id != self.host.peer_id:  # lets get_record ask the owner
                            self.host.libp2p.get_peerstore().add_addrs(info.peer_id, info.addrs, PROVIDER_ADDR_TTL)

            async with trio.open_nursery() as nursery:
                for peer_id in closest[:BUCKET_SIZE]:
                    if peer_id != self.host.peer_id:
                        nursery.start_soon(ask, peer_id)
            if len(answered) < len([p for p in closest[:BUCKET_SIZE] if p != self.host.peer_id]):
                self._closest.pop(key, None)  # someone did not answer: walk the DHT again next time
        return list(found.values())[:MAX_PROVIDERS]

    async def _closest_peers(self, key: bytes) -> list[ID]:
        """The peers closest to ``key``, from a FIND_NODE walk at most every CLOSEST_REUSE s.

        Every round of every member looks up the same provider key, and the
        walk (up to 20 FIND_NODE requests) is most of the round's cost; the
        closest peers of one key change only as nodes come and go, so a
        change in our routing table, or a peer that stops answering, forces
        a new walk.
        """
        table = self.routing_table_size()
        cached = self._closest.get(key)
        if cached is not None and cached[1] == table and trio.current_time() - cached[0] < CLOSEST_REUSE and cached[2]:
            return cached[2]
        closest = list(await self.kad.peer_routing.find_closest_peers_network(key))
        self._closest[key] = (trio.current_time(), table, closest)
        return closest

    async def put(self, key: str, value: bytes) -> None:
        """Store a value of a kind registered in ``extra_validators`` at the peers closest to ``key``."""
        await self.kad.put_value(key, value)

    async def get(self, key: str) -> bytes | None:
        """The best value the DHT has for ``key`` (the caller validates it again), or None.

        Callers poll (the revocation list and the policy, every 30 s on every
        node, p2pvpn.spread), so one poll must stay cheap, and this is the one
        rule that keeps it so (docs/protocol.md §15.9.4): a local copy answers
        (py-libp2p's own rule); else the ADDRESS_FIRST_ASK peers of our
        routing table closest to the key are asked in parallel, one round
        trip, and the best valid answer within ADDRESS_FIRST_WAIT s wins; only
        if none of them holds a valid value does an iterative lookup run (a
        FIND_NODE walk, then GET_VALUE to up to 20 peers: ~40 RPCs, which
        every node not holding the value paid per poll), and after one that
        found nothing (no revocation list, no policy: the usual case) not
        again for GET_WALK_AFTER s. Counted in ``reads`` (get_local,
        get_near, get_walk, get_walk_skipped).
        """
        if self.kad.value_store.get(key.encode()) is None:
            found = self._best(key, *await self._ask(key, self._table_closest(key), first=False))
            if found is not None:
                self.reads["get_near"] += 1
                self._walked_empty.pop(key, None)
                return found
            empty_at = self._walked_empty.get(key)
            if empty_at is not None and trio.current_time() - empty_at < GET_WALK_AFTER:
                self.reads["get_walk_skipped"] += 1
                return None  # the last lookup found nothing, a moment ago: nobody close has one either
            self.reads["get_walk"] += 1
        else:
            self.reads["get_local"] += 1
        value: bytes | None = None
        try:
            value = await self.kad.get_value(key)
        except Exception as exc:  # py-libp2p raises assorted types when nothing is found
            log.debug("no value for %s: %r", key, exc)
        if value is None:
            self._walked_empty[key] = trio.current_time()
            if len(self._walked_empty) > MAX_PROVIDERS:
                self._walked_empty.pop(next(iter(self._walked_empty)))
        else:
            self._walked_empty.pop(key, None)
        return value

    async def get_address(self, key: str, trace: dict[str, object] | None = None) -> bytes | None:
        """The best valid record stored under an address key (docs/protocol.md §18.2), or None.

        A valid local copy answers at once (its expiry bounds how stale it
        is). Else an iterative value lookup (:meth:`_walk`, go-libp2p's
        GetValue with quorum 1: the lookup sits on a packet's path) whose
        first round asks, at once and in parallel, the ADDRESS_FIRST_ASK
        peers of our routing table closest to the key and up to
        ADDRESS_CONNECTED_ASK of the DHT servers we hold connections to, the
        closest to the key first (rules.first_asks): in a network whose
        members our table mostly holds the former are among the peers the
        owner stored it at, and the latter are where a young routing table
        put it (bootstrap peers, the first peers met), with no dial. Every
        answer without the record names closer peers, and the walk goes on
        from them at once. Counted in ``reads`` (address_local;
        address_near, address_connected: a first-round peer answered;
        address_walk: a later one did; address_missed; address_asked:
        first-round GET_VALUEs; address_rpcs: all GET_VALUEs of lookups).
        ``trace`` (a dict, if given) gets the same for this one lookup:
        found_by, asked_first, rpcs, failed, invalid, hops.
        """
        trace = trace if trace is not None else {}
        local = self.kad.value_store.get(key.encode())
        if local is not None:
            try:
                self.address_validator.validate(key, local.value)
                self.reads["address_local"] += 1
                trace["found_by"] = "local"
                return local.value
            except rec.RecordError:
                self.rejected += 1
                self.kad.value_store.remove(key.encode())
        table = self._table_closest(key)
        target = _position(key.encode())
        asks = first_asks(table, [p for p in self.host.connected_peers() if p != self.host.peer_id
                                  and self._serves(p) is True],
                          lambda p: _position(p.to_bytes()) ^ target, ADDRESS_CONNECTED_ASK)
        seeds = [p for p in self.kad.routing_table.find_local_closest_peers(key.encode(), walk.K)
                 if p != self.host.peer_id]
        lookup: walk.Lookup[ID] = walk.Lookup(target, lambda p: _position(p.to_bytes()), seeds,
                                              exclude=self.host.peer_id)
        value = await self._walk(key, lookup, asks, trace)
        self.reads["address_asked"] += min(len(asks), lookup.requests)
        self.reads["address_rpcs"] += lookup.requests
        trace.update(asked_first=len(asks), rpcs=lookup.requests, failed=lookup.failures, late=lookup.late,
                     invalid=lookup.invalid, hops=lookup.hops, found_by=None)
        if value is None:
            self.reads["address_missed"] += 1
            log.debug("no valid address record under %s (%d GET_VALUEs, %d failed, %d invalid)",
                      key, lookup.requests, lookup.failures, lookup.invalid)
            return None
        if lookup.found_at in asks:
            trace["found_by"] = "near" if lookup.found_at in table else "connected"
        else:
            trace["found_by"] = "walk"
        self.reads[f"address_{trace['found_by']}"] += 1
        self.kad.value_store.put(key.encode(), value)  # a second packet's lookup answers locally
        return value

    async def _walk(self, key: str, lookup: walk.Lookup[ID], first: Sequence[ID] = (),
                    trace: dict[str, object] | None = None) -> bytes | None:
        """Drive ``lookup`` with GET_VALUEs (first to ``first``, at once); the first valid value, or None.

        Each GET_VALUE answers with the record if the peer holds one and with
        the peer's closest peers to the key (their addresses go to the
        peerstore), so no FIND_NODE walk precedes the asking, as py-libp2p's
        ``get_value`` does (a full walk, then GET_VALUE to up to 20 peers).
        The first round's peers still silent after ADDRESS_FIRST_WAIT s stop
        holding back the walk (``lookup.release_first``; their answers still
        count). An answer with neither value nor closer peers is a failed
        peer; so is one silent for WALK_RPC_TIMEOUT s, but only as far as the
        walk goes (it asks the next peer at once): its request stays open
        until the walk ends, and a late answer still counts
        (``lookup.on_late_reply``). On a machine so loaded that half the
        GET_VALUEs took longer than that (50 nodes on 2 cores at a load of
        40), dropping them made walks miss records the slow peers held.
        An invalid record counts in ``rejected`` and ``lookup.invalid``. At
        most WALK_TIMEOUT s and ``lookup.max_requests`` GET_VALUEs in all.
        ``trace`` gets ``replies``: per answer, seconds since the start and
        "v" (the value), "c" (closer peers only), "x" (failed), "s" (slow:
        no answer yet), "V"/"C"/"X" (a slow peer's late answer).
        """
        replies: list[tuple[float, str]] = []
        if trace is not None:
            trace["replies"] = replies
        begun = trio.current_time()
        # Answers (peer, value, closer, slow: no answer yet after WALK_RPC_TIMEOUT), and None when the first
        # round's ADDRESS_FIRST_WAIT s are over (lookup.release_first). Two messages per request at most.
        send, receive = trio.open_memory_channel[tuple[ID, bytes | None, list[ID], bool] | None](
            2 * (lookup.max_requests + len(first)) + 1)
        found: list[bytes] = []

        async def first_round_over() -> None:
            await trio.sleep(ADDRESS_FIRST_WAIT)
            send.send_nowait(None)

        async def slow(peer_id: ID, answered: trio.Event) -> None:
            with trio.move_on_after(WALK_RPC_TIMEOUT):
                await answered.wait()
                return
            send.send_nowait((peer_id, None, [], True))

        async def ask(peer_id: ID) -> None:
            value: bytes | None = None
            closer: list[ID] = []
            answered = trio.Event()
            nursery.start_soon(slow, peer_id, answered)
            try:
                value, closer = await libp2p_compat.value_and_closer_from_peer(self.kad, peer_id, key.encode())
            except STREAM_ERRORS as exc:
                log.debug("GET_VALUE %s from %s failed: %r", key, peer_id, exc)
            answered.set()
            send.send_nowait((peer_id, value, closer, False))

        with trio.move_on_after(WALK_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for peer_id in lookup.ask_first(first):
                    nursery.start_soon(ask, peer_id)
                nursery.start_soon(first_round_over)
                while not lookup.finished:
                    for peer_id in lookup.next_requests():
                        nursery.start_soon(ask, peer_id)
                    if lookup.finished:
                        break
                    answer = await receive.receive()
                    if answer is None:
                        lookup.release_first()
                        continue
                    peer_id, value, closer, silent = answer
                    late = lookup.gave_up_on(peer_id)
                    if silent:
                        if not late:  # else its answer came first after all (both messages were queued)
                            replies.append((round(trio.current_time() - begun, 3), "s"))
                            lookup.on_failure(peer_id)
                        continue
                    mark = "v" if value is not None else "c" if closer else "x"
                    replies.append((round(trio.current_time() - begun, 3), mark.upper() if late else mark))
                    if value is None and not closer:
                        if not late:
                            lookup.on_failure(peer_id)
                        continue
                    valid = False
                    if value is not None:
                        try:
                            _ByKey(self).validate(key, value)  # counts a refusal in rejected
                            valid = True
                        except Exception:  # noqa: BLE001 - RecordError, or a registered kind's own error
                            pass
                    reply = lookup.on_late_reply if late else lookup.on_reply
                    reply(peer_id, closer, found=valid, invalid=value is not None and not valid)
                    if valid and value is not None:
                        found.append(value)
                nursery.cancel_scope.cancel()  # requests still in flight change nothing now
        return found[0] if found else None

    def _table_closest(self, key: str) -> list[ID]:
        """The ADDRESS_FIRST_ASK peers of our routing table closest to ``key`` (XOR of SHA-256s, as kad-dht)."""
        return [p for p in self.kad.routing_table.find_local_closest_peers(key.encode(), ADDRESS_FIRST_ASK)
                if p != self.host.peer_id]

    async def _ask(self, key: str, peers: Sequence[ID], first: bool = True, wait: float = ADDRESS_FIRST_WAIT,
                   answered: list[ID] | None = None) -> list[bytes]:
        """GET_VALUE to ``peers``, in parallel, for at most ``wait`` s.

        The valid answers (their senders appended to ``answered``, in the
        same order); with ``first``, the first one ends the asking.
        """
        found: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def ask(peer_id: ID) -> None:
                try:
                    value = await libp2p_compat.value_from_peer(self.kad, peer_id, key.encode())
                except STREAM_ERRORS as exc:
                    log.debug("GET_VALUE %s from %s failed: %r", key, peer_id, exc)
                    return
                if not isinstance(value, bytes):
                    return
                try:
                    _ByKey(self).validate(key, value)  # counts a refusal in rejected
                except Exception:  # noqa: BLE001 - RecordError, or a registered kind's own error
                    return
                found.append(value)
                if answered is not None:
                    answered.append(peer_id)
                if first:
                    nursery.cancel_scope.cancel()

            nursery.cancel_scope.deadline = trio.current_time() + wait
            for peer_id in peers:
                nursery.start_soon(ask, peer_id)
        return found

    async def get_record(self, peer_id: ID, refresh: bool = False) -> bytes | None:
        """The best copy the DHT has of the peer's record; the caller verifies it again.

        KadDHT answers from its local store first, without validating and for
        24 h whatever the record's own expiry. A stale local copy would hide
        the owner's fresh one forever, so an invalid local copy is dropped.
        A valid one is returned, unless ``refresh`` (the caller cannot reach
        the peer: its record may have changed while valid, e.g. new relay
        addresses) and the network was last asked REFRESH_AFTER s ago or
        more: then it is set aside while the network is asked, and the best
        of both (highest seq) is kept and returned.
        """
        key = rec.record_key(self.network, peer_id)
        local = self.kad.value_store.get(key.encode())
        kept: bytes | None = None
        if local is not None:
            try:
                self.validator.validate(key, local.value)
                kept = local.value
            except rec.RecordError as exc:
                self.rejected += 1
                log.info("dropped invalid stored record of %s: %s", peer_id, exc)
            recently = trio.current_time() - self._asked.get(key, -REFRESH_AFTER) < REFRESH_AFTER
            if kept is not None and (not refresh or recently):
                return kept
            self.kad.value_store.remove(key.encode())
        self._asked[key] = trio.current_time()
        if len(self._asked) > MAX_PROVIDERS:
            self._asked.pop(next(iter(self._asked)))
        fetched: bytes | None = None
        try:
            fetched = await self._fetch(peer_id, key)
        finally:
            best = self._best(key, fetched, kept)
            if kept is not None and best is not None:  # what we stored stays stored (servers answer from it)
                self.kad.value_store.put(key.encode(), best)
        return best

    async def _fetch(self, peer_id: ID, key: str) -> bytes | None:
        """The owner's answer if it gives one, else what an iterative lookup finds.

        The lookup starts only if the owner has not answered within
        OWNER_HEAD_START s (or failed): a reachable owner answers in
        milliseconds and no lookup is made, while one behind a NAT, whose
        stale private address we may dial in vain, costs a second, not the
        whole OWNER_TIMEOUT. Whichever answers first after that wins.
        """
        found: dict[str, bytes] = {}
        owner_failed = trio.Event()

        async def ask_owner(cancel: trio.CancelScope) -> None:
            value = await self._from_owner(peer_id, key)
            if value is None:
                owner_failed.set()
                return
            found["owner"] = value
            cancel.cancel()

        async def look_up(cancel: trio.CancelScope) -> None:
            with trio.move_on_after(OWNER_HEAD_START):
                await owner_failed.wait()
            with trio.move_on_after(QUERY_TIMEOUT):
                try:
                    value = await self.kad.get_value(key)
                except rec.RecordError as exc:  # every copy found was invalid (e.g. expired during the query)
                    log.debug("no valid record for %s: %s", peer_id, exc)
                    return
                if value is not None:
                    found["network"] = value
                    cancel.cancel()  # an owner silent this long is not reachable from here

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_owner, nursery.cancel_scope)
            nursery.start_soon(look_up, nursery.cancel_scope)
        return found.get("owner") or found.get("network")

    async def _from_owner(self, peer_id: ID, key: str) -> bytes | None:
        """Ask the record's owner itself (one GET_VALUE), if it serves the DHT and has addresses.

        The owner always holds its newest record, so one RPC to it replaces a
        whole iterative lookup (a FIND_NODE walk, then GET_VALUE to up to 20
        peers) per member and round; twelve members made a round take 15-20 s.
        A node behind a NAT serves no DHT (client mode) and an unknown one has
        no address: then the network is asked as before. The answer is
        validated like any other copy.
        """
        if peer_id == self.host.peer_id or not (peer_id in self.host.connected_peers() or self._has_addrs(peer_id)):
            return None
        value = None
        with trio.move_on_after(OWNER_TIMEOUT):
            value = await libp2p_compat.value_from_peer(self.kad, peer_id, key.encode())
        if not isinstance(value, bytes):
            return None
        try:
            self.validator.validate(key, value)
        except rec.RecordError as exc:
            self.rejected += 1
            log.info("%s answered with an invalid record of its own: %s", peer_id, exc)
            return None
        return value

    def _has_addrs(self, peer_id: ID) -> bool:
        try:
            return bool(self.host.libp2p.get_peerstore().addrs(peer_id))
        except PeerStoreError:
            return False

    def _best(self, key: str, *values: bytes | None) -> bytes | None:
        candidates = [v for v in values if v is not None]
        if not candidates:
            return None
        try:
            return candidates[_ByKey(self).select(key, candidates)]
        except Exception:  # noqa: BLE001 - RecordError, or a registered kind's own error
            return None


def _position(data: bytes) -> int:
    """A key's or a peer ID's position in the kad-dht keyspace: SHA-256 of its bytes, as an integer."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


class _ConnectionEvents(INotifee):
    """Sets an event on every new connection (the hygiene loop's wake-up); nothing else."""

    def __init__(self, on_connected: Callable[[], None]) -> None:
        self._on_connected = on_connected

    async def connected(self, network: object, conn: object) -> None:
        self._on_connected()

    async def disconnected(self, network: object, conn: object) -> None:
        pass

    async def opened_stream(self, network: object, stream: object) -> None:
        pass

    async def closed_stream(self, network: object, stream: object) -> None:
        pass

    async def listen(self, network: object, multiaddr: object) -> None:
        pass

    async def listen_close(self, network: object, multiaddr: object) -> None:
        pass


class _ByKey(Validator):
    """Our namespace's validator: node records, or a registered kind of value for an exact key."""

    def __init__(self, dht: Dht) -> None:
        self._dht = dht

    def _for(self, key: str) -> Validator:
        if is_address_key(key):
            return self._dht.address_validator
        return self._dht.extra_validators.get(key, self._dht.validator)

    def validate(self, key: str, value: bytes) -> None:
        try:
            self._for(key).validate(key, value)
        except Exception:  # any refusal (RecordError, a registered kind's own error) is counted, then passed on
            self._dht.rejected += 1  # status: discovery.rejected_records (a PUT_VALUE flood shows here)
            raise

    def select(self, key: str, values: list[bytes]) -> int:
        return self._for(key).select(key, values)
