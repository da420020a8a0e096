"""Canaries: one per reach-in of p2pvpn.libp2p_compat into py-libp2p internals.

Each asserts that the internal still exists and still does what we rely on,
with real hosts where behaviour matters. When py-libp2p is upgraded, the
failing canary names the reach-in to revisit.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError

from p2pvpn import identity, libp2p_compat
from p2pvpn.discovery import record as rec
from p2pvpn.discovery.dht import PROTOCOL_ID, Dht
from p2pvpn.host import STREAM_ERRORS, Host, relay_of
from p2pvpn.testing.cluster import free_port

NETWORK = "canary"


@asynccontextmanager
async def hosts(count: int) -> AsyncIterator[list[Host]]:
    made = [Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(count)]
    async with AsyncExitStack() as stack:
        for host in made:
            await stack.enter_async_context(host.running())
        yield made


@asynccontextmanager
async def dhts(count: int) -> AsyncIterator[list[Dht]]:
    """``count`` connected hosts, each running a DHT server."""
    async with hosts(count) as made, AsyncExitStack() as stack:
        out = [Dht(h, NETWORK, server=True) for h in made]
        for dht in out:
            await stack.enter_async_context(dht.running())
        for h in made[1:]:
            await h.libp2p.connect(PeerInfo(made[0].peer_id, made[0].listen_addrs))
        yield out


async def connect(a: Host, b: Host) -> None:
    await a.libp2p.connect(PeerInfo(b.peer_id, b.listen_addrs))


def _protocols(host: Host, peer_id: ID) -> list[str]:
    try:
        return list(host.libp2p.get_peerstore().get_protocols(peer_id) or [])
    except PeerStoreError:  # identify has not run yet
        return []


def test_the_start_up_check_passes_on_the_installed_py_libp2p() -> None:
    libp2p_compat.check(multihop=True)


# -- KadDHT ------------------------------------------------------------------------------------------


async def test_kad_protocol_id_is_ours_on_the_wire_and_nowhere_the_ipfs_one() -> None:
    async with dhts(1) as (dht,):
        handlers = dht.host.libp2p.get_mux().handlers
        assert PROTOCOL_ID in handlers
        assert libp2p_compat.UPSTREAM_KAD_PROTOCOL not in handlers
    assert libp2p_compat._kad_globals_naming(libp2p_compat.UPSTREAM_KAD_PROTOCOL, skip_patched=False) == []


def test_kad_lookup_fallback_threshold_is_read_at_call_time() -> None:
    from libp2p.kad_dht import peer_routing

    libp2p_compat.set_kad_lookup_fallback(1)
    assert peer_routing.MIN_PEERS_THRESHOLD == 1
    source = inspect.getsource(peer_routing.PeerRouting.find_closest_peers_network)
    assert "MIN_PEERS_THRESHOLD" in source  # a global looked up per call, so rebinding it takes effect


async def test_kad_add_peer_filter_keeps_a_refused_peer_out_of_the_table() -> None:
    async with dhts(2) as (a, b):
        asked: list[tuple[ID, bool]] = []
        libp2p_compat.filter_kad_add_peer(a.kad, lambda peer, skipped: asked.append((peer, skipped)) is None)
        assert await a.kad.add_peer(b.host.peer_id, skip_server_mode_check=True) is False
        assert asked == [(b.host.peer_id, True)]
    from libp2p.kad_dht.kad_dht import KadDHT

    # The stream handler is where clients got in: it must still be what passes the skip flag.
    assert "skip_server_mode_check=True" in inspect.getsource(KadDHT)


async def test_kad_mode_switch_keeps_the_routing_table_and_the_handler_reads_it() -> None:
    from libp2p.kad_dht.kad_dht import DHTMode

    async with dhts(2) as (a, b):
        with trio.fail_after(10):  # identify tells a that b serves the DHT (our add_peer filter needs it)
            while PROTOCOL_ID not in _protocols(a.host, b.host.peer_id):
                await trio.sleep(0.05)
        await a.kad.add_peer(b.host.peer_id)
        before = a.routing_table_size()
        libp2p_compat.set_kad_mode(a.kad, server=False)
        assert a.kad.mode == DHTMode.CLIENT
        assert a.routing_table_size() == before >= 1
        libp2p_compat.set_kad_mode(a.kad, server=True)
        assert a.kad.mode == DHTMode.SERVER


async def test_providers_from_one_peer() -> None:
    async with dhts(2) as (a, b):
        key = bytes.fromhex(rec.provider_key(NETWORK, "members"))
        a.kad.provider_store.add_provider(key, PeerInfo(a.host.peer_id, a.host.listen_addrs))
        with trio.fail_after(10):
            providers = await libp2p_compat.providers_from_peer(b.kad, a.host.peer_id, key)
        assert [p.peer_id for p in providers] == [a.host.peer_id]


async def test_value_from_one_peer() -> None:
    async with dhts(2) as (a, b):
        key_pair = create_new_key_pair()
        owner = identity.peer_id(key_pair)
        now = time.time()
        record = rec.make_record(owner, NETWORK, seq=int(now * 1000), now=now, ttl=300, addrs=[])
        sealed = rec.seal(record, key_pair.private_key)
        key = rec.record_key(NETWORK, owner).encode()
        a.kad.value_store.put(key, sealed)
        with trio.fail_after(10):
            value = await libp2p_compat.value_from_peer(b.kad, a.host.peer_id, key)
        assert value == sealed


async def test_identify_push_tells_peers_about_a_new_protocol() -> None:
    async with hosts(2) as (a, b):
        await connect(b, a)
        await trio.sleep(0.2)  # let the first identify finish
        a.set_handler("/canary/1.0.0", lambda stream: stream.close())
        await libp2p_compat.identify_pusher(a.libp2p)()
        with trio.fail_after(10):
            while "/canary/1.0.0" not in (b.libp2p.get_peerstore().get_protocols(a.peer_id) or []):
                await trio.sleep(0.05)


# -- Swarm -------------------------------------------------------------------------------------------


async def test_unblock_peer_clears_the_negative_dial_cache() -> None:
    async with hosts(1) as (a,):
        ghost = identity.peer_id(create_new_key_pair())
        dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{free_port()}")
        with pytest.raises(STREAM_ERRORS):
            with trio.fail_after(15):
                await a.libp2p.connect(PeerInfo(ghost, [dead]))
        cache = a.libp2p.get_network()._negative_peer_cache
        assert cache.is_blocked(str(ghost))
        libp2p_compat.unblock_peer(a.libp2p, ghost)
        assert not cache.is_blocked(str(ghost))


async def test_protection_is_what_the_pruner_honours() -> None:
    from libp2p.network import connection_pruner

    async with hosts(2) as (a, b):
        libp2p_compat.protect_peer(a.libp2p, b.peer_id, "canary")
        assert libp2p_compat.is_protected(a.libp2p, b.peer_id)
        libp2p_compat.unprotect_peer(a.libp2p, b.peer_id, "canary")
        assert not libp2p_compat.is_protected(a.libp2p, b.peer_id)
    assert "is_protected" in inspect.getsource(connection_pruner.ConnectionPruner)


async def test_dial_addr_opens_a_connection_at_exactly_that_address_and_direction_is_known() -> None:
    async with hosts(2) as (a, b):
        with trio.fail_after(10):
            conn = await libp2p_compat.dial_addr(a.libp2p, b.listen_addrs[0], b.peer_id)
        assert b.peer_id in a.connected_peers()
        assert libp2p_compat.is_outbound(conn)
        with trio.fail_after(5):
            while not b.libp2p.get_network().get_connections(a.peer_id):
                await trio.sleep(0.02)
        assert not libp2p_compat.is_outbound(b.libp2p.get_network().get_connections(a.peer_id)[0])


async def test_dial_guard_intercepts_every_direct_dial_of_a_real_host() -> None:
    async with hosts(3) as (a, refused, allowed):
        checked: list[ID] = []

        def check(peer_id: ID, addr: object) -> None:
            checked.append(peer_id)
            if peer_id == refused.peer_id:
                raise SwarmException("canary: refused")

        libp2p_compat.install_dial_guard(a.libp2p, check)
        with pytest.raises(STREAM_ERRORS):
            with trio.fail_after(10):
                await a.libp2p.connect(PeerInfo(refused.peer_id, refused.listen_addrs))
        assert refused.peer_id not in a.connected_peers()
        with pytest.raises(STREAM_ERRORS):  # the dial-back path is guarded too
            await a.libp2p.get_network().dial_addr(refused.listen_addrs[0], refused.peer_id)
        with pytest.raises(STREAM_ERRORS):  # and the hole-punch path
            await a.libp2p.get_network().dial_addr_as_responder(refused.listen_addrs[0], refused.peer_id)
        with trio.fail_after(10):
            await a.libp2p.connect(PeerInfo(allowed.peer_id, allowed.listen_addrs))
        assert allowed.peer_id in a.connected_peers()
        assert checked.count(refused.peer_id) >= 3 and allowed.peer_id in checked


def test_dial_guard_fails_closed_when_another_dial_path_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.network.swarm import Swarm

    class Upgraded(Swarm):  # what an upstream release with a new dial method looks like
        async def dial_somehow(self, addr: object) -> object:
            return await self.transport.dial(addr)

    assert "dial_somehow" in libp2p_compat._methods_calling_transport_dial(Upgraded)
    monkeypatch.setattr("libp2p.network.swarm.Swarm", Upgraded)
    with pytest.raises(libp2p_compat.CompatError, match="does not cover every dial path"):
        libp2p_compat.check_dial_guard()


def test_dial_guard_fails_closed_when_its_hook_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.network.swarm import Swarm

    monkeypatch.delattr(Swarm, "dial_addr_as_responder")
    with pytest.raises(libp2p_compat.CompatError, match="multi-hop dial guard"):
        libp2p_compat.check_dial_guard()


def test_a_node_with_exit_via_refuses_to_start_without_the_guard(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from libp2p.network.swarm import Swarm

    from p2pvpn import config
    from p2pvpn.node import Node

    monkeypatch.delattr(Swarm, "_dial_addr_single_attempt")
    boot = identity.peer_id(create_new_key_pair())
    cfg = config.build({}, {"use_exit": "auto", "exit_via": "auto", "bootstrap": [f"/ip4/198.18.1.20/tcp/4242/p2p/{boot}"]})
    with pytest.raises(libp2p_compat.CompatError, match="_dial_addr_single_attempt"):
        Node(cfg, create_new_key_pair(), tmp_path)


def test_a_missing_internal_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.network.swarm import Swarm

    monkeypatch.delattr(Swarm, "unblock_peer")
    with pytest.raises(libp2p_compat.CompatError) as info:
        libp2p_compat.check()
    assert "Swarm.unblock_peer" in str(info.value) and "\n" not in str(info.value)


# -- DCUtR and relayed connections ---------------------------------------------------------------------


async def test_passive_dcutr_never_starts_a_punch_by_itself() -> None:
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

    assert "_auto_drive_loop" in inspect.getsource(DCUtRProtocol.run)  # what we silence is what run starts
    assert "self._try_unilateral_upgrade(" in inspect.getsource(DCUtRProtocol)  # step 0 still goes through it
    async with hosts(1) as (a,):
        dcutr = libp2p_compat.passive_dcutr_class()(a.libp2p)
        assert await dcutr._try_unilateral_upgrade(a.peer_id) is False
        with trio.move_on_after(0.2) as scope:
            await dcutr._auto_drive_loop()
        assert scope.cancelled_caught  # it sleeps forever: no punches of its own


def test_relayed_raw_connection_carries_the_circuit_address() -> None:
    from libp2p.connection_types import ConnectionType

    relay, peer = (identity.peer_id(create_new_key_pair()) for _ in range(2))
    addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer}")
    raw = libp2p_compat.relayed_raw_connection(object(), True, addr)
    assert raw.get_transport_addresses() == [addr]
    assert getattr(raw, "connection_type", ConnectionType.RELAYED) == ConnectionType.RELAYED
    assert relay_of(raw) == relay


# -- the socket factory p2pvpn.exit.marking relies on ------------------------------------------------------


async def test_tcp_dials_create_their_sockets_through_trio_socket() -> None:
    made: list[int] = []

    class Counting(trio.abc.SocketFactory):
        def socket(self, family=None, type=None, proto=0):  # type: ignore[no-untyped-def]
            import socket as stdlib

            made.append(1)
            return trio.socket.from_stdlib_socket(stdlib.socket(family, type, proto))

    async with hosts(2) as (a, b):
        trio.socket.set_custom_socket_factory(Counting())
        try:
            with trio.fail_after(10):
                await connect(a, b)
        finally:
            trio.socket.set_custom_socket_factory(None)
    assert made, "py-libp2p's TCP dial did not create its socket through trio.socket: SO_MARK would be lost"


async def test_kad_parts_the_dht_module_uses_directly_are_there_on_a_real_kad() -> None:
    async with dhts(1) as (dht,):
        kad = dht.kad
        for attr, methods in (("value_store", ("get", "put", "remove")), ("provider_store", ("get_providers",)),
                              ("peer_routing", ("find_closest_peers_network",)),
                              ("routing_table", ("get_peer_ids", "remove_peer", "peer_in_table", "add_peer"))):
            part = getattr(kad, attr)
            for method in methods:
                assert callable(getattr(part, method)), f"KadDHT.{attr}.{method}"


# -- yamux's send window timeout (p2pvpn.session.tunnel counts it as tunnel_write_timeout) ------------


async def test_a_peer_that_never_reads_is_told_apart_as_a_send_window_timeout() -> None:
    async with hosts(2) as (writer, reader):
        accepted: list[object] = []

        async def never_read(stream: object) -> None:
            accepted.append(stream)
            await trio.sleep_forever()

        reader.set_handler("/canary/never-read/1", never_read)
        target = [a for a in reader.libp2p.get_addrs() if "/tcp/" in str(a)][0].decapsulate_code(421)
        stream = await writer.open_stream(reader.peer_id, [target], "/canary/never-read/1")
        with trio.fail_after(30), pytest.raises(STREAM_ERRORS) as caught:
            for _ in range(64):  # 64 x 64 KiB: far more than the 256 KiB window
                await stream.write(b"x" * 65536)
        assert libp2p_compat.is_send_window_timeout(caught.value), repr(caught.value)
    assert not libp2p_compat.is_send_window_timeout(ConnectionResetError())


async def test_a_dht_server_stores_providers_of_our_role_keys_only() -> None:
    """ADD_PROVIDER over the wire: a foreign key is refused and counted, our "members" key is stored."""
    async with dhts(2) as (server, client):
        await trio.sleep(0.5)  # identify: the client learns that the server serves our KAD protocol
        foreign = "1220" + "ab" * 32
        ours = rec.provider_key(NETWORK, "members")
        with trio.fail_after(20):
            await client.kad.provide(foreign)
            await client.kad.provide(ours)
            while not server.kad.provider_store.get_providers(bytes.fromhex(ours)):
                await trio.sleep(0.05)
        assert server.kad.provider_store.get_providers(bytes.fromhex(foreign)) == []
        assert server.rejected >= 1 and client.rejected >= 1  # the client's own store refused it too
