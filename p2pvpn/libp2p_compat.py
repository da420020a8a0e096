"""The one door to py-libp2p internals: every reach-in behind a named function, checked at start.

Rules of this module:
* Code outside it uses py-libp2p's public API only (``IHost``, ``INetStream``,
  ``KadDHT``'s public methods). Anything else -- a private method, a module
  global we rebind, a method we patch, a class we subclass to silence a loop
  -- is a function here, whose docstring names the upstream thing it relies
  on and why we need it.
* :func:`check` verifies that each internal exists with the shape we assume
  (attribute present, signature, where a value lives) and raises
  :class:`CompatError` naming it if not. The node calls it at start, so an
  upgrade of py-libp2p fails loudly in one place instead of silently doing
  nothing (the old ``getattr(..., None)`` / ``except AttributeError`` code did).
* The multi-hop dial guard is privacy-relevant (``--exit-via``): if its
  internals are missing, or py-libp2p grew a dial path the guard does not
  cover, :func:`check_dial_guard` raises and the node does not start (fail
  closed). Each reach-in has a canary test in tests/compat/.

Written against py-libp2p 0.8.1.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import linecache
import logging
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.custom_types import TProtocol
from libp2p.network import swarm
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux import yamux

from p2pvpn.errors import P2pvpnError

UPSTREAM_KAD_PROTOCOL = "/ipfs/kad/1.0.0"
# Every kad_dht module that sends or serves the KAD protocol through a module-level PROTOCOL_ID.
KAD_MODULES = ("common", "kad_dht", "peer_routing", "provider_store", "value_store")
# The Swarm methods that open a new underlay connection (call ``transport.dial``); the guard wraps them all.
GUARDED_DIALS = ("_dial_addr_single_attempt", "dial_addr_as_responder")


class CompatError(P2pvpnError):
    """An internal of py-libp2p that p2pvpn relies on is missing or has changed shape."""


def _fail(what: str, detail: str) -> CompatError:
    try:
        from importlib.metadata import version

        found = version("libp2p")
    except Exception:  # metadata missing in odd installs; the name of the internal is what matters
        found = "unknown"
    return CompatError(f"py-libp2p {found}: {what} {detail}; p2pvpn needs py-libp2p 0.8.x (see p2pvpn/libp2p_compat.py)")


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def _require_method(owner: type, name: str, params: tuple[str, ...], what: str) -> None:
    func = getattr(owner, name, None)
    if func is None or not callable(func) or getattr(func, "__isabstractmethod__", False):
        raise _fail(what, f"is missing ({owner.__name__}.{name})")
    got = _params(func)
    if tuple(got[: len(params)]) != params:
        raise _fail(what, f"changed signature ({owner.__name__}.{name}{tuple(got)}, expected {params})")


# -- KadDHT: protocol ID, lookup fallback, routing-table admission ------------------------------------


def use_kad_protocol_id(protocol_id: TProtocol) -> None:
    """Make KadDHT speak ``protocol_id`` instead of /ipfs/kad/1.0.0.

    Relies on: ``libp2p.kad_dht.{common,kad_dht,peer_routing,provider_store,value_store}.PROTOCOL_ID``,
    module globals each module imported from ``common``. py-libp2p 0.8.1 takes
    a ``protocol_prefix`` argument but ignores it on the wire, and speaking
    /ipfs/kad would mix our records into the public IPFS DHT. Process-wide.
    """
    for name in KAD_MODULES:
        module = importlib.import_module(f"libp2p.kad_dht.{name}")
        module.PROTOCOL_ID = protocol_id  # type: ignore[attr-defined]


def set_kad_lookup_fallback(threshold: int) -> None:
    """Below ``threshold`` routing-table peers, KadDHT lookups also ask every peer the peerstore knows.

    Relies on: ``libp2p.kad_dht.peer_routing.MIN_PEERS_THRESHOLD`` (5 upstream),
    read at call time by ``PeerRouting.find_closest_peers_network``. In a small
    network that fallback is every lookup, and each unreachable node behind a
    NAT costs a dial timeout; we fall back only when the table is empty (1).
    """
    module = importlib.import_module("libp2p.kad_dht.peer_routing")
    module.MIN_PEERS_THRESHOLD = threshold  # type: ignore[attr-defined]


def filter_kad_add_peer(kad: Any, refuse: Callable[[ID, bool], bool]) -> None:
    """Wrap ``kad.add_peer`` so that ``refuse(peer, skip_server_mode_check)`` can keep a peer out.

    Relies on: ``KadDHT.add_peer(peer_id, *, skip_server_mode_check=False)``,
    which its stream handler calls with the check skipped for every peer
    that sends a request, clients included (p2pvpn.discovery.dht explains why
    clients must stay out of routing tables).
    """
    original = kad.add_peer

    async def add_peer(peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        if refuse(peer_id, skip_server_mode_check):
            return False
        return bool(await original(peer_id, skip_server_mode_check=skip_server_mode_check))

    kad.add_peer = add_peer


def filter_kad_providers(kad: Any, accept: Callable[[bytes], bool], refused: Callable[[], None]) -> None:
    """Wrap ``kad.provider_store.add_provider`` so that only keys ``accept`` names are stored.

    Relies on: ``ProviderStore.add_provider(key, provider)`` being where
    ``KadDHT``'s ADD_PROVIDER handler (and our own ``provide``) store a
    provider record. py-libp2p caps providers per key (20) but not keys: a
    stream of fresh identities, each allowed 10 ADD_PROVIDERs per 10 s,
    grows the store without bound (tests/adversarial, ``dht-flood``).
    """
    store = kad.provider_store
    original = store.add_provider

    def add_provider(key: bytes, provider: Any) -> None:
        if not accept(key):
            refused()
            return
        original(key, provider)

    store.add_provider = add_provider


def set_kad_mode(kad: Any, server: bool) -> None:
    """Switch ``kad`` between server and client without emptying its routing table.

    Relies on: the ``KadDHT.mode`` attribute (``DHTMode``), read by
    ``handle_stream`` and the query code. ``KadDHT.switch_mode`` would also
    run ``cleanup_routing_table`` when going to client mode, leaving a client
    that cannot ask anyone; the caller moves the stream handler itself.
    """
    from libp2p.kad_dht.kad_dht import DHTMode

    kad.mode = DHTMode.SERVER if server else DHTMode.CLIENT


async def providers_from_peer(kad: Any, peer_id: ID, key: bytes) -> list[Any]:
    """One GET_PROVIDERS to ``peer_id``: the providers it stores for ``key``.

    Relies on: ``ProviderStore._get_providers_from_peer_with_closers(peer_id, key)``
    returning ``(providers, closer_peers)``. The public ``find_providers``
    returns only the local store once it holds any provider, so a DHT server
    would see only the members that announced to it.
    """
    providers, _closer = await kad.provider_store._get_providers_from_peer_with_closers(peer_id, key)
    return list(providers)


async def value_from_peer(kad: Any, peer_id: ID, key: bytes) -> Any:
    """One GET_VALUE to ``peer_id`` (the record's owner): its answer or None.

    Relies on: ``ValueStore._get_from_peer(peer_id, key)``. One RPC to the
    owner replaces a whole iterative lookup per member and round.
    """
    return await kad.value_store._get_from_peer(peer_id, key)


async def value_and_closer_from_peer(kad: Any, peer_id: ID, key: bytes) -> tuple[bytes | None, list[ID]]:
    """One GET_VALUE to ``peer_id``: (the value it holds or None, the closer peers it named).

    Relies on: ``ValueStore._get_from_peer(peer_id, key, return_closer_peers=True)``,
    which also stores the closer peers' addresses in the peerstore (so the
    next step can dial them). It swallows every failure into ``(None, [])``;
    the iterative value lookup (Dht.get_address) treats that answer as a
    failed peer. Any other shape fails loudly.
    """
    answer = await kad.value_store._get_from_peer(peer_id, key, return_closer_peers=True)
    if not (isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[1], list)):
        raise _fail("GET_VALUE with closer peers", f"answered {type(answer).__name__}, not (value, closer peers)")
    value, closer = answer
    return (value if isinstance(value, bytes) else None), [p for p in closer if isinstance(p, ID)]


def identify_pusher(host: Any) -> Callable[[], Awaitable[None]]:
    """A function that sends an identify push to every connected peer (our protocol list changed).

    Relies on: ``BasicHost._push_identify_to_all_peers()``. Peers learn that
    we stopped or started serving the DHT from it and fix their tables.
    """
    return host._push_identify_to_all_peers  # type: ignore[no-any-return]


# -- Swarm: dial cache, pruning protection, dial-back, multi-hop guard ----------------------------------


def unblock_peer(host: Any, peer_id: ID) -> None:
    """Forget a failed dial to ``peer_id`` so it can be dialed now.

    Relies on: ``Swarm.unblock_peer(peer_id)`` (not in ``INetworkService``).
    The swarm refuses to dial a peer for 60 s after a failed dial; we back off
    ourselves, and a relay or peer that restarts is back in seconds.
    """
    host.get_network().unblock_peer(peer_id)


def protect_peer(host: Any, peer_id: ID, tag: str) -> None:
    """Keep py-libp2p's connection pruner away from ``peer_id``'s connections.

    Relies on: ``Swarm.protect(peer_id, tag)`` (go-libp2p's ConnManager.Protect).
    Above ``high_watermark`` connections the pruner closes idle unprotected
    ones; a flood of fresh identities must not push out relays and members.
    """
    host.get_network().protect(peer_id, tag)


def unprotect_peer(host: Any, peer_id: ID, tag: str) -> None:
    """Undo :func:`protect_peer` for ``tag``. Relies on: ``Swarm.unprotect(peer_id, tag)``."""
    host.get_network().unprotect(peer_id, tag)


def is_protected(host: Any, peer_id: ID) -> bool:
    """Whether some tag protects ``peer_id``. Relies on: ``Swarm.is_protected(peer_id, tag="")``."""
    return bool(host.get_network().is_protected(peer_id))


async def dial_addr(host: Any, addr: Any, peer_id: ID) -> Any:
    """Open a new connection to ``peer_id`` at exactly ``addr`` (AutoNAT dial-back).

    Relies on: ``Swarm.dial_addr(addr, peer_id)`` (not in ``INetworkService``):
    a dial-back must test the address the client asked about, not whichever
    connection the swarm already has.
    """
    return await host.get_network().dial_addr(addr, peer_id)


def is_outbound(conn: Any) -> bool:
    """Whether we opened ``conn``. Relies on: ``SwarmConn.direction`` (a ``Direction``)."""
    return str(conn.direction).lower().endswith("outbound")


def install_dial_guard(host: Any, check: Callable[[ID, Any], None]) -> None:
    """Call ``check(peer_id, addr)`` before every new underlay connection; it raises to refuse.

    Relies on: ``Swarm._dial_addr_single_attempt`` (every direct dial:
    ``dial_peer``, ``dial_addr``, retries) and ``Swarm.dial_addr_as_responder``
    (hole punching) being the only methods that call ``transport.dial``.
    Privacy-relevant (``--exit-via``): :func:`check_dial_guard` runs first and
    refuses to install if either is missing or another dial path exists.
    """
    check_dial_guard()
    swarm = host.get_network()
    for name in GUARDED_DIALS:
        original = getattr(swarm, name)

        async def guarded(addr: Any, peer_id: ID, source: Any = None, _original: Any = original) -> Any:
            check(peer_id, addr)
            return await _original(addr, peer_id, source)

        setattr(swarm, name, guarded)


def check_dial_guard() -> None:
    """Fail closed: the guarded methods exist with (addr, peer_id, source), and no other Swarm method dials."""
    from libp2p.network.swarm import Swarm

    for name in GUARDED_DIALS:
        _require_method(Swarm, name, ("self", "addr", "peer_id", "source"), "the multi-hop dial guard's hook")
    dialing = sorted(_methods_calling_transport_dial(Swarm))
    if dialing != sorted(GUARDED_DIALS):
        raise _fail("the multi-hop dial guard", f"does not cover every dial path (Swarm methods calling "
                    f"transport.dial: {', '.join(dialing) or 'none'}; guarded: {', '.join(GUARDED_DIALS)})")


def _methods_calling_transport_dial(cls: type) -> set[str]:
    """Names of ``cls``'s methods whose body calls ``<something>.dial(...)`` on a transport."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for call in ast.walk(node):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "dial"
                    and "transport" in ast.unparse(call.func.value).lower()):
                found.add(node.name)
    return found


# -- relayed connections ----------------------------------------------------------------------------------


def relayed_raw_connection(stream: Any, initiator: bool, addr: Any) -> Any:
    """A relay stream as a raw connection, ready for the ordinary libp2p upgrade (Noise, yamux).

    Relies on: ``RawConnection(stream, initiator, connection_type, addresses)``
    (``libp2p.network.connection.raw_connection``): ``connection_type=RELAYED``
    and the ``/p2p/<relay>/p2p-circuit/p2p/<peer>`` address travel with the
    upgraded connection, which is how p2pvpn.host.relay_of tells it is relayed.
    """
    from libp2p.connection_types import ConnectionType
    from libp2p.network.connection.raw_connection import RawConnection

    return RawConnection(stream, initiator=initiator, connection_type=ConnectionType.RELAYED, addresses=[addr])


# -- DCUtR: we decide who starts -------------------------------------------------------------------------


def passive_dcutr_class() -> type:
    """py-libp2p's ``DCUtRProtocol`` without its own initiative.

    Relies on: ``DCUtRProtocol._auto_drive_loop`` (started by ``run``; it
    would punch toward every relayed peer by itself, while p2pvpn.nat.holepunch
    decides which side starts) and ``DCUtRProtocol._try_unilateral_upgrade``
    ("spec step 0": a plain direct dial first, which our dials already made
    and which only delays the punch by a dial timeout).
    """
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

    class PassiveDCUtR(DCUtRProtocol):  # type: ignore[misc]
        async def _auto_drive_loop(self) -> None:
            import trio

            await trio.sleep_forever()

        async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
            return False

    return PassiveDCUtR


# -- the start-up check ----------------------------------------------------------------------------------


def _check_kad() -> None:
    for name in KAD_MODULES:
        module = importlib.import_module(f"libp2p.kad_dht.{name}")
        if not hasattr(module, "PROTOCOL_ID"):
            raise _fail("KadDHT's protocol ID", f"is no longer a global of libp2p.kad_dht.{name}")
    for name, value in _kad_globals_naming(UPSTREAM_KAD_PROTOCOL, skip_patched=True):
        raise _fail("KadDHT's protocol ID", f"is also captured as libp2p.kad_dht.{name} (value {value!r})")
    peer_routing = importlib.import_module("libp2p.kad_dht.peer_routing")
    if not isinstance(getattr(peer_routing, "MIN_PEERS_THRESHOLD", None), int):
        raise _fail("KadDHT's lookup fallback", "is missing (libp2p.kad_dht.peer_routing.MIN_PEERS_THRESHOLD)")
    from libp2p.kad_dht.kad_dht import KadDHT
    from libp2p.kad_dht.provider_store import ProviderStore
    from libp2p.kad_dht.value_store import ValueStore

    _require_method(KadDHT, "add_peer", ("self", "peer_id", "skip_server_mode_check"), "KadDHT routing-table admission")
    _require_method(ProviderStore, "_get_providers_from_peer_with_closers", ("self", "peer_id", "key"),
                    "GET_PROVIDERS to one peer")
    _require_method(ValueStore, "_get_from_peer", ("self", "peer_id", "key"), "GET_VALUE to one peer")
    if "return_closer_peers" not in _params(ValueStore._get_from_peer):
        raise _fail("GET_VALUE with closer peers", "ValueStore._get_from_peer takes no return_closer_peers")
    _require_method(ProviderStore, "add_provider", ("self", "key", "provider"), "the provider-key filter")
    if "provider_store.add_provider" not in inspect.getsource(KadDHT._do_handle_stream):
        raise _fail("the provider-key filter", "ADD_PROVIDER no longer stores through provider_store.add_provider")
    if "mode" not in inspect.getsource(KadDHT.handle_stream):
        raise _fail("KadDHT's mode switch", "no longer reads KadDHT.mode in handle_stream")
    # Public methods of KadDHT's parts (no interface promises them): p2pvpn.discovery.dht uses them directly.
    from libp2p.kad_dht.peer_routing import PeerRouting
    from libp2p.kad_dht.routing_table import RoutingTable

    for owner, name, params in (
        (ValueStore, "get", ("self", "key")), (ValueStore, "put", ("self", "key", "value")),
        (ValueStore, "remove", ("self", "key")), (ProviderStore, "get_providers", ("self", "key")),
        (PeerRouting, "find_closest_peers_network", ("self", "target_key")),
        (RoutingTable, "get_peer_ids", ("self",)), (RoutingTable, "remove_peer", ("self", "peer_id")),
        (RoutingTable, "peer_in_table", ("self", "peer_id")),
        (RoutingTable, "add_peer", ("self", "peer_obj", "skip_server_mode_check")),
    ):  # fmt: skip
        _require_method(owner, name, params, "KadDHT's stores and routing table")
    for attr in ("value_store", "provider_store", "peer_routing", "routing_table"):
        if f"self.{attr} =" not in inspect.getsource(KadDHT.__init__):
            raise _fail("KadDHT's stores and routing table", f"KadDHT no longer sets self.{attr}")


def _kad_globals_naming(value: str, skip_patched: bool) -> list[tuple[str, str]]:
    """(module.name, value) of every kad_dht module global still equal to ``value``, outside KAD_MODULES' PROTOCOL_ID."""
    import pkgutil

    import libp2p.kad_dht as package

    hits = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"libp2p.kad_dht.{info.name}")
        for attr, held in vars(module).items():
            if skip_patched and attr == "PROTOCOL_ID" and info.name in KAD_MODULES:
                continue
            if isinstance(held, str) and held == value:
                hits.append((f"{info.name}.{attr}", held))
    return hits


def _check_host() -> None:
    from libp2p.host.basic_host import BasicHost
    from libp2p.network.connection.swarm_connection import SwarmConn
    from libp2p.network.swarm import Swarm

    _require_method(BasicHost, "_push_identify_to_all_peers", ("self",), "identify push")
    _require_method(Swarm, "unblock_peer", ("self", "peer_id"), "the swarm's negative dial cache")
    _require_method(Swarm, "protect", ("self", "peer_id", "tag"), "connection pruning protection")
    _require_method(Swarm, "unprotect", ("self", "peer_id", "tag"), "connection pruning protection")
    _require_method(Swarm, "is_protected", ("self", "peer_id"), "connection pruning protection")
    _require_method(Swarm, "dial_addr", ("self", "addr", "peer_id"), "AutoNAT dial-back")
    from libp2p.connection_types import ConnectionType
    from libp2p.network.connection.raw_connection import RawConnection

    _require_method(RawConnection, "__init__", ("self", "stream", "initiator", "connection_type", "addresses"),
                    "relayed raw connections")
    if not hasattr(ConnectionType, "RELAYED"):
        raise _fail("relayed raw connections", "lost ConnectionType.RELAYED")
    if not isinstance(inspect.getattr_static(SwarmConn, "direction", None), property):
        raise _fail("connection direction", "is missing (SwarmConn.direction)")


# -- yamux's own stall timeout ------------------------------------------------------------------------

YAMUX_WINDOW_TIMEOUT = "Timed out waiting for window update"


def is_send_window_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is py-libp2p's yamux giving up on a peer that granted no send window for 5 s.

    Relies on: ``YamuxStream.write`` raising ``MuxedStreamError("Timed out
    waiting for window update after 5 seconds.")``, which ``NetStream.write``
    re-raises as ``StreamReset`` from it (so the cause is looked at too), and
    on no other way to tell that error apart. For a tunnel it means what our own write timeout
    means, a peer that stopped reading (p2pvpn.session.tunnel.WriteTimeout),
    and it usually fires first: a py-libp2p peer that stops reading its
    stream keeps reading its socket, so only the window runs dry.
    """
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    seen: BaseException | None = exc
    for _ in range(4):  # the error itself, or what it was raised from
        if seen is None:
            return False
        if isinstance(seen, MuxedStreamError) and YAMUX_WINDOW_TIMEOUT in str(seen):
            return True
        seen = seen.__cause__
    return False


def send_window(stream: Any) -> int:
    """Bytes we may still send on ``stream`` before the peer grants more (test attackers pace by it).

    Relies on: ``NetStream.muxed_stream`` and ``YamuxStream.send_window``.
    """
    return int(stream.muxed_stream.send_window)


def _check_yamux_window_timeout() -> None:
    if "self.send_window" not in inspect.getsource(yamux.YamuxStream.write):
        raise _fail("yamux's send window", "is no longer YamuxStream.send_window")
    if YAMUX_WINDOW_TIMEOUT not in inspect.getsource(yamux.YamuxStream.write):
        raise _fail("yamux's send window timeout", f"no longer raises {YAMUX_WINDOW_TIMEOUT!r} (YamuxStream.write)")


def _check_dcutr() -> None:
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol

    _require_method(DCUtRProtocol, "_auto_drive_loop", ("self",), "DCUtR's own hole-punch loop")
    _require_method(DCUtRProtocol, "_try_unilateral_upgrade", ("self", "peer_id"), "DCUtR's direct-dial step")
    _require_method(DCUtRProtocol, "initiate_hole_punch", ("self", "peer_id"), "DCUtR hole punching")
    if "_auto_drive_loop" not in inspect.getsource(DCUtRProtocol.run):
        raise _fail("DCUtR's own hole-punch loop", "is no longer started by DCUtRProtocol.run")


_checked = False


def check_once() -> None:
    """:func:`check` once per process (every Host calls it; tests build many)."""
    global _checked
    if not _checked:
        check()
        _checked = True


def check(*, multihop: bool = False) -> None:
    """Verify every internal reached through this module; with ``multihop``, the dial guard too (fail closed)."""
    cached = set(linecache.cache)
    try:
        _check_kad()
        _check_host()
        _check_dcutr()
        _check_yamux_window_timeout()
        _check_logs_and_dials()
        _check_observed_addresses()
        if multihop:
            check_dial_guard()
    finally:
        _forget_sources(cached)


def _forget_sources(kept: set[str]) -> None:
    """Drop the files the checks read from linecache, except those cached before.

    ``inspect.getsource`` caches each whole file's lines for tracebacks: the
    checks' ~0.55 MB of py-libp2p source held ~1.1 MiB of every node's memory
    (docs/performance.md, "RSS, round 4"). A traceback reads a file again when
    it needs it; entries that are not files (``<attrs generated ...>``) stay.
    """
    for name in set(linecache.cache) - kept:
        if not name.startswith("<"):
            linecache.cache.pop(name, None)

# -- latency tuning ----------------------------------------------------------------------------------
#
# Latency tuning: two py-libp2p behaviours we change, because each cost every tunnel time.
#
# 1. **yamux credit, once per half window** (as go-yamux does it). py-libp2p
#    0.8's ``YamuxStream._auto_tune_and_send_window_update`` answers nearly
#    every read with a WINDOW_UPDATE frame (its "partial slack" and "release
#    on read" branches). For a VPN tunnel every Data frame is one read, so each
#    packet sent cost a second frame back: one more Noise record, TCP segment
#    and wake-up of the sender's process per packet, about a third of a ping's
#    round trip through two nodes, and most of the throughput lost on a fast
#    link (docs/performance.md, "Latency budget", "The bare veth"). We credit
#    once half the window has been consumed, keeping py-libp2p's window
#    auto-tuning.
# 2. **No happy-eyeballs wait after the last address.** ``Swarm.dial_peer``
#    starts a dial per selected address (at most two) and then waits 250 ms
#    for it to *fail* before going on, also after the last one; with
#    ``max_connections_per_peer`` above 1 a success does not end the wait,
#    so every connection took at least 250 ms. With no delay the (at most
#    two) addresses are dialed in parallel and the first connection returns
#    at once.
#
# ``install_tuning`` fails loudly (``CompatError``) when the py-libp2p it finds
# lacks what these rely on; tests/session/test_libp2p_tuning.py holds the
# canaries.

_YAMUX_ATTRS = ("_auto_tune_and_send_window_update", "_apply_autotune_epoch", "send_window_update")
_YAMUX_STATE = ("window_lock", "recv_window", "target_recv_window", "_pending_recv_release")
HAPPY_EYEBALLS_DELAY = 0.0


async def _credit_in_batches(self: Any, *, bytes_read: int = 0) -> None:
    """Count what the application read; credit it to the peer once it reaches half the window."""
    increment = 0
    async with self.window_lock:
        self._pending_recv_release += bytes_read
        if self._pending_recv_release >= self.target_recv_window // 2:
            increment = self._pending_recv_release
            self._pending_recv_release = 0
            self.recv_window += increment
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            increment += self._apply_autotune_epoch(buffered)  # may grow the window (RTT-based, as before)
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def install_tuning() -> None:
    """Apply both changes (idempotent); CompatError if py-libp2p changed underneath."""
    stream_cls = yamux.YamuxStream
    missing = [name for name in _YAMUX_ATTRS if not hasattr(stream_cls, name)]
    missing += [name for name in _YAMUX_STATE if name not in stream_cls.__init__.__code__.co_names]
    if "stream_buffers" not in yamux.Yamux.__init__.__code__.co_names:
        missing.append("Yamux.stream_buffers")
    if not isinstance(getattr(swarm, "_HAPPY_EYEBALLS_DELAY", None), float):
        missing.append("swarm._HAPPY_EYEBALLS_DELAY")
    if missing:
        raise CompatError(f"py-libp2p lacks {', '.join(missing)}; "
                          "p2pvpn.libp2p_compat.install_tuning needs updating for this py-libp2p version")  # fmt: skip
    stream_cls._auto_tune_and_send_window_update = _credit_in_batches  # type: ignore[method-assign]
    swarm._HAPPY_EYEBALLS_DELAY = HAPPY_EYEBALLS_DELAY  # type: ignore[attr-defined]


# -- logs and dials ------------------------------------------------------------------------------------
#
# p2pvpn.logs puts every record on one line in one format and demotes py-libp2p's routine complaints;
# p2pvpn.dial_backoff decides which addresses are not worth dialing. Both depend on py-libp2p details:
# the texts of its log messages, its import-time logging setup and the swarm's per-address dial.

ROUTINE_LIBP2P_LOGS: tuple[tuple[str, str], ...] = (
    ("libp2p.host.basic_host", "Failed to open stream to peer"),  # multi-line error per failed new_stream
    ("libp2p", "protocols not supported"),  # a peer without our DHT (or relay, ...) protocol: routine
    ("libp2p.kad_dht", "Failed to open stream to"),  # a lookup asking a peer that just left
    ("libp2p.kad_dht", "failed to open a stream to peer"),  # the same, worded by basic_host's StreamFailure
    ("libp2p.kad_dht", "recently failed all addresses"),  # the same, seen by the swarm's negative cache
    ("libp2p.kad_dht", "Failed to read DHT message from stream"),  # a peer closed its DHT stream (restart)
    ("libp2p.kad_dht", "is not a valid PeerId"),  # FIND_NODE for our record keys, which are no peer IDs
    ("libp2p.transport.tcp", "Failed to open TCP stream"),  # a dial failed: the caller counts and retries
)
"""(logger prefix, message text) of py-libp2p records that p2pvpn.logs shows only at debug."""

# Where each text of ROUTINE_LIBP2P_LOGS is written upstream; the canary checks it is still there.
ROUTINE_LIBP2P_SOURCES: tuple[tuple[str, str], ...] = (
    ("libp2p.host.basic_host", "Failed to open stream to peer"),
    ("libp2p.protocol_muxer.multiselect_client", "protocols not supported"),
    ("libp2p.kad_dht.peer_routing", "Failed to open stream to"),
    ("libp2p.host.basic_host", "failed to open a stream to peer"),
    ("libp2p.network.swarm", "recently failed all addresses"),
    ("libp2p.kad_dht.kad_dht", "Failed to read DHT message from stream"),
    ("libp2p.kad_dht.kad_dht", "is not a valid PeerId"),
    ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
)
DIAL_FILTER_HOOK = "_dial_with_retry"
# The Swarm methods that dial one address through DIAL_FILTER_HOOK (dial_peer per selected address).
DIAL_FILTER_CALLERS = ("dial_peer", "dial_addr")


def route_libp2p_logs() -> None:
    """Let py-libp2p's records reach the root logger's handler (p2pvpn.logs).

    Relies on: ``libp2p.utils.logging.setup_logging``, run by ``import libp2p``,
    which without ``LIBP2P_DEBUG`` leaves the ``libp2p`` logger with no
    handler and ``propagate = False`` (so Python's last-resort handler printed
    its warnings bare), and with it gives ``libp2p.*`` loggers queue handlers
    of their own format. We clear those handlers and let them propagate.
    """
    # Under p2pvpn.libp2p_import, `import libp2p` does not run setup_logging() (the package __init__
    # is deferred); whoever makes it run later (libp2p_compat.new_host's fallback) calls us again.
    import libp2p  # noqa: F401  (without the deferral, its import-time setup must have run before we undo it)

    for name in ["libp2p", *[n for n in logging.root.manager.loggerDict if n.startswith("libp2p.")]]:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def install_dial_filter(
    host: Any, verdict: Callable[[Any], str | None], record: Callable[[Any, BaseException | None], None]
) -> None:
    """Ask ``verdict(addr)`` before each dial of one address; tell ``record(addr, error or None)`` after it.

    Relies on: ``Swarm._dial_with_retry(addr, peer_id, source)``, the per-address
    dial (with py-libp2p's own retries) that ``dial_peer`` calls for each
    address it selects and ``dial_addr`` (DCUtR hole punching, AutoNAT
    dial-back) calls directly. A skipped address fails like a dead one, with
    a ``SwarmException``, so callers go on to the next address. Chains with
    :func:`install_dial_guard`, which wraps the single attempt under it.
    """
    from libp2p.network.exceptions import SwarmException

    network = host.get_network()
    original = getattr(network, DIAL_FILTER_HOOK)

    async def filtered(addr: Any, peer_id: ID, source: Any = None) -> Any:
        reason = verdict(addr)
        if reason is not None:
            raise SwarmException(f"dial to {addr} skipped ({reason})")
        try:
            conn = await original(addr, peer_id, source)
        except Exception as exc:  # recorded and re-raised: py-libp2p's dial raises several unrelated types
            record(addr, exc)
            raise
        record(addr, None)
        return conn

    setattr(network, DIAL_FILTER_HOOK, filtered)


def _check_logs_and_dials() -> None:
    from libp2p.network.swarm import Swarm

    _require_method(Swarm, DIAL_FILTER_HOOK, ("self", "addr", "peer_id", "source"), "the dial filter's hook")
    for caller in DIAL_FILTER_CALLERS:
        if f"self.{DIAL_FILTER_HOOK}(" not in inspect.getsource(getattr(Swarm, caller)):
            raise _fail("the dial filter", f"is bypassed: Swarm.{caller} no longer calls {DIAL_FILTER_HOOK}")
    for module, text in ROUTINE_LIBP2P_SOURCES:
        if text not in inspect.getsource(importlib.import_module(module)):
            raise _fail("a routine log line p2pvpn.logs demotes", f"changed ({text!r} is gone from {module})")


# -- identify's observed addresses (p2pvpn netcheck) ---------------------------------------------------

def observed_addresses(host: Any) -> list[dict[str, Any]]:
    """What identify told us others see us as: one entry per connection that brought an observation.

    Each: ``external`` (ip, port) the peer saw, ``observer`` (py-libp2p's
    observer group: the peer's IPv4, or its IPv6 /56) and ``local`` (ip,
    port) of our end of that connection, or None where it cannot be found.
    Relies on: ``BasicHost._observed_addr_manager`` (an ObservedAddrManager,
    None when address discovery is off) and its ``_conn_observations``
    (id(conn) -> (local thin waist, external thin waist, observer group,
    weakref to the connection)); our end of a connection is read from the
    trio socket under it (``_connection_socket``). py-libp2p skips
    observations over relayed connections and of loopback addresses.
    """
    manager = getattr(host, "_observed_addr_manager", None)
    if manager is None:
        return []
    out = []
    for _local_tw, external_tw, group, conn_ref in list(manager._conn_observations.values()):
        conn = conn_ref()
        external = _ip_port(external_tw)
        if conn is None or external is None:
            continue
        sock = _connection_socket(conn)
        try:
            local = tuple(sock.getsockname()[:2]) if sock is not None else None
        except OSError:
            local = None
        out.append({"external": external, "observer": group, "local": local})
    return out


def _ip_port(thin_waist: str) -> tuple[str, int] | None:
    parts = thin_waist.strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("ip4", "ip6") and parts[2] in ("tcp", "udp") and parts[3].isdigit():
        return parts[1], int(parts[3])
    return None


def _connection_socket(conn: Any) -> Any:
    """The socket under a swarm connection: SwarmConn.muxed_conn (Yamux) .secured_conn (SecureSession)
    .conn (noise read-writer) .conn (RawConnection) .stream (TrioTCPStream) .stream (trio SocketStream)
    .socket; None for other stacks (QUIC, relayed), which have no such chain."""
    obj = conn
    for _ in range(10):
        sock = getattr(obj, "socket", None)
        if sock is not None and hasattr(sock, "getsockname"):
            return sock
        for attr in ("muxed_conn", "secured_conn", "conn", "stream"):
            nxt = getattr(obj, attr, None)
            if nxt is not None:
                obj = nxt
                break
        else:
            return None
    return None


def _check_observed_addresses() -> None:
    from libp2p.host.basic_host import BasicHost
    from libp2p.host.observed_addr_manager import ObservedAddrManager

    if "self._observed_addr_manager" not in inspect.getsource(BasicHost.__init__):
        raise _fail("netcheck's observed addresses", "BasicHost no longer sets self._observed_addr_manager")
    if "self._conn_observations" not in inspect.getsource(ObservedAddrManager.__init__):
        raise _fail("netcheck's observed addresses", "ObservedAddrManager no longer sets self._conn_observations")

# -- the host, built without libp2p/__init__ (start-up time) -----------------------------------------
#
# ``libp2p.new_host`` lives in py-libp2p's package ``__init__``, which imports every transport and
# service (p2pvpn.libp2p_import). ``new_host`` below builds the same object graph for the arguments
# p2pvpn passes (TCP, QUIC if a listen address asks for it, our security transports, yamux first),
# from the submodules alone; QUIC's modules (aioquic) are imported only when QUIC is configured.
# For anything else it calls py-libp2p's own ``new_host``. Canary:
# tests/compat/test_libp2p_import.py builds both and compares them attribute by attribute.

_NEW_HOST_KWARGS = ("key_pair", "sec_opt", "muxer_preference", "listen_addrs", "enable_quic",
                    "addrs_factory", "enable_mDNS", "connection_config")
_LIGHT_PROTOCOLS = frozenset({"ip4", "ip6", "dns", "dns4", "dns6", "tcp", "udp", "quic-v1", "quic"})


def new_host(**kwargs: Any) -> Any:
    """``libp2p.new_host(**kwargs)``, without importing all of py-libp2p when the arguments allow it.

    Relies on: upstream ``new_host`` -> ``new_swarm`` -> ``_build_transports_for_swarm`` of
    py-libp2p 0.8.1: a default ``ResourceManager`` (``libp2p.rcmgr.new_resource_manager``) given to
    the swarm and the host, ``PeerStore`` holding our key pair, ``TransportUpgrader`` with the given
    security transports and muxers yamux then mplex, a ``TCP`` transport for TCP listen addresses
    and a ``QUICTransport`` for QUIC ones, a ``TransportManager`` without port sharing, and a
    ``BasicHost`` with the default negotiate timeout.
    """
    listen = kwargs.get("listen_addrs") or ()
    protocols = {p.name for addr in listen for p in addr.protocols()}
    if (set(kwargs) - set(_NEW_HOST_KWARGS) or not listen or not kwargs.get("sec_opt")
            or kwargs.get("muxer_preference", "YAMUX") != "YAMUX" or not protocols <= _LIGHT_PROTOCOLS):
        import libp2p  # the full import; only for arguments p2pvpn does not use

        upstream = libp2p.new_host  # runs libp2p/__init__ now if it has not run (p2pvpn.libp2p_import) ...
        route_libp2p_logs()  # ... and with it setup_logging(): undo it again
        return upstream(**kwargs)
    return _build_host(**kwargs)


def _build_host(*, key_pair: Any, sec_opt: Any, listen_addrs: Any, enable_quic: bool = False,
                addrs_factory: Any = None, enable_mDNS: bool = False, connection_config: Any = None,
                muxer_preference: str = "YAMUX") -> Any:
    try:
        from libp2p.host.basic_host import DEFAULT_NEGOTIATE_TIMEOUT, BasicHost
        from libp2p.network.swarm import Swarm
        from libp2p.peer.peerstore import PeerStore
        from libp2p.rcmgr import new_resource_manager
        from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
        from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux
        from libp2p.transport.manager import TransportManager
        from libp2p.transport.tcp.tcp import TCP
        from libp2p.transport.upgrader import TransportUpgrader
    except ImportError as exc:
        raise _fail("new_host's building blocks", f"cannot be imported ({exc})") from None

    resource_manager = new_resource_manager()
    upgrader = TransportUpgrader(
        secure_transports_by_protocol=sec_opt,
        muxer_transports_by_protocol={TProtocol(YAMUX_PROTOCOL_ID): Yamux, TProtocol(MPLEX_PROTOCOL_ID): Mplex},
    )
    transports: list[Any] = []
    for addr in listen_addrs:
        names = {p.name for p in addr.protocols()}
        if "tcp" in names and not any(t.__class__ is TCP for t in transports):
            transports.append(TCP())
        elif names & {"quic", "quic-v1"} and not any(t.__class__.__name__ == "QUICTransport" for t in transports):
            from libp2p.transport.quic.transport import QUICTransport  # aioquic: only when configured

            transports.append(QUICTransport(key_pair.private_key, config=None, enable_autotls=False))
    if enable_quic and not any(t.__class__.__name__ == "QUICTransport" for t in transports):
        raise _fail("new_host", "enable_quic without a QUIC listen address is not built here")
    peer_id = ID.from_pubkey(key_pair.public_key)
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)
    swarm = Swarm(peer_id, peerstore, upgrader, transports=transports, retry_config=None,
                  connection_config=connection_config, psk=None, metric_send_channel=None,
                  transport_manager=TransportManager(port_demuxers={}))
    swarm.set_resource_manager(resource_manager)
    return BasicHost(network=swarm, enable_mDNS=enable_mDNS, bootstrap=None, enable_upnp=False,
                     negotiate_timeout=DEFAULT_NEGOTIATE_TIMEOUT, resource_manager=resource_manager,
                     metric_recv_channel=None, addrs_factory=addrs_factory)
