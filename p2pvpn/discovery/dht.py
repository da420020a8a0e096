"""Our private Kademlia DHT: py-libp2p's KadDHT under our own protocol ID, accepting only our records.

py-libp2p 0.8.1 takes a ``protocol_prefix`` argument but ignores it on the
wire: every module sends and serves the module-level ``PROTOCOL_ID``
(/ipfs/kad/1.0.0). Speaking /ipfs/kad would mix our records into the public
IPFS DHT, so we rebind that constant in the modules that use it, once per
process, before any DHT exists. This is process-wide by nature; p2pvpn runs
one DHT per process. go-libp2p gets the same with ``dht.ProtocolPrefix("/p2pvpn")``.

Strict validation is on and the only namespace is "p2pvpn", so a node stores
nothing but signed NodeRecords of its own network (docs/protocol.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.discovery import record as rec
from p2pvpn.host import STREAM_ERRORS, Host

log = logging.getLogger(__name__)

PROTOCOL_PREFIX = "/p2pvpn"
PROTOCOL_ID = TProtocol(f"{PROTOCOL_PREFIX}/kad/1.0.0")
QUERY_TIMEOUT = 20.0
MAX_PROVIDERS = 1000
BUCKET_SIZE = 20  # k: providers announce to the k peers closest to the key

_patched = False


def _use_our_protocol_id() -> None:
    """Rebind KadDHT's hard-coded protocol ID in every module that captured it."""
    global _patched
    if _patched:
        return
    import libp2p.kad_dht.common as common
    import libp2p.kad_dht.kad_dht as kad_dht
    import libp2p.kad_dht.peer_routing as peer_routing
    import libp2p.kad_dht.provider_store as provider_store
    import libp2p.kad_dht.value_store as value_store

    for module in (common, kad_dht, peer_routing, provider_store, value_store):
        module.PROTOCOL_ID = PROTOCOL_ID  # type: ignore[attr-defined]
    _patched = True


class Dht:
    """The DHT as the node uses it: bootstrap, publish our record, find members and roles."""

    def __init__(self, host: Host, network: str, server: bool) -> None:
        _use_our_protocol_id()
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.records.validator import NamespacedValidator

        self.host = host
        self.network = network
        self.server = server
        self.rejected = 0  # invalid records found in our own store (counted, then dropped)
        self._validator = rec.RecordValidator(network)
        validator = NamespacedValidator({"p2pvpn": self._validator}, strict_validation=True)
        self.kad = KadDHT(
            host.libp2p,
            DHTMode.SERVER if server else DHTMode.CLIENT,
            validator=validator,
            validator_changed=True,
            protocol_prefix=TProtocol(PROTOCOL_PREFIX),
            strict_validation=True,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from libp2p.tools.anyio_service import background_trio_service

        async with background_trio_service(self.kad):
            yield

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
        from libp2p.kad_dht.kad_dht import DHTMode

        if server == self.server:
            return
        self.server = server
        self.kad.mode = DHTMode.SERVER if server else DHTMode.CLIENT
        if server:
            self.host.set_handler(PROTOCOL_ID, self.kad.handle_stream)
        else:
            self.host.libp2p.remove_stream_handler(PROTOCOL_ID)
        log.info("DHT switched to %s mode", "server" if server else "client")

    def routing_table_size(self) -> int:
        return self.kad.get_routing_table_size()

    async def publish(self, peer_id: ID, sealed: bytes, roles: list[str]) -> None:
        """Store our record under its key and announce ourselves as provider of each role key."""
        with trio.move_on_after(QUERY_TIMEOUT):
            await self.kad.put_value(rec.record_key(self.network, peer_id), sealed)
        for role in roles:
            with trio.move_on_after(QUERY_TIMEOUT):
                await self.kad.provide(rec.provider_key(self.network, role))

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
            closest = list(await self.kad.peer_routing.find_closest_peers_network(key))

            async def ask(peer_id: ID) -> None:
                with trio.move_on_after(QUERY_TIMEOUT / 2):
                    try:
                        providers, _closer = await store._get_providers_from_peer_with_closers(peer_id, key)
                    except STREAM_ERRORS as exc:
                        log.debug("GET_PROVIDERS from %s failed: %r", peer_id, exc)
                        return
                    for info in providers:
                        found.setdefault(info.peer_id, info)

            async with trio.open_nursery() as nursery:
                for peer_id in closest[:BUCKET_SIZE]:
                    if peer_id != self.host.peer_id:
                        nursery.start_soon(ask, peer_id)
        return list(found.values())[:MAX_PROVIDERS]

    async def get_record(self, peer_id: ID) -> bytes | None:
        """The best copy the DHT has of the peer's record; the caller verifies it again.

        KadDHT answers from its local store first, without validating and for
        24 h whatever the record's own expiry. A stale local copy would hide
        the owner's fresh one forever, so an invalid local copy is dropped and
        the network asked.
        """
        key = rec.record_key(self.network, peer_id)
        local = self.kad.value_store.get(key.encode())
        if local is not None:
            try:
                self._validator.validate(key, local.value)
            except rec.RecordError as exc:
                self.rejected += 1
                log.info("dropped invalid stored record of %s: %s", peer_id, exc)
                self.kad.value_store.remove(key.encode())
        with trio.move_on_after(QUERY_TIMEOUT):
            try:
                return await self.kad.get_value(rec.record_key(self.network, peer_id))
            except rec.RecordError as exc:  # every copy found was invalid (e.g. expired during the query)
                log.debug("no valid record for %s: %s", peer_id, exc)
        return None
