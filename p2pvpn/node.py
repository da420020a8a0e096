"""A running p2pvpn node: one nursery owns the control socket, TUN reader, host and tunnels.

Start order is chosen so that a failure leaves nothing behind and touches
nothing already running: first the control socket (refuses to start if
another node answers on it), then the TUN (needs privileges), then the
libp2p host (may find its port taken). Shutdown is cancellation; each
resource is released by the context that created it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn import addressing, identity
from p2pvpn import ops
from p2pvpn.config import Config, parse_peer_id
from p2pvpn.control import server as control
from p2pvpn.control.paths import RUN_DIR, control_path, find_control_path  # noqa: F401  (re-exported: node.RUN_DIR, ...)
from p2pvpn.dataplane.egress import Demand, route_from_tun
from p2pvpn.discovery.dht import Dht
from p2pvpn.discovery.mesh_lookups import MeshLookups
from p2pvpn.discovery.record import NodeRecord, RecordValidator, RelayRole
from p2pvpn.discovery.service import Discovery
from p2pvpn.errors import ConfigError, P2pvpnError
from p2pvpn.exit import marking
from p2pvpn.exit.client_routes import MARK
from p2pvpn.exit.forwarding import require_root
from p2pvpn.exit.multihop import HiddenPath, hidden_config, keep_relay_slots
from p2pvpn.exit.client_routes import require_ip
from p2pvpn.exit.nft import require_nft
from p2pvpn.exit.service import ExitClient, ExitServer, list_exits
from p2pvpn.host import Host, check_port_free
from p2pvpn.limits import Limits, ResourceManager
from p2pvpn.membership.cert import to_text as cert_text
from p2pvpn.membership.invite import PROTOCOL_ID as JOIN_PROTOCOL_ID
from p2pvpn.membership.join import JoinService
from p2pvpn.membership.network import ROLE_EXIT
from p2pvpn.membership.service import MembershipService
from p2pvpn.membership.store import Store
from p2pvpn.membership.view import certificate_addresses, check_roles, load_view
from p2pvpn.policy.service import PolicyService, make_firewall
from p2pvpn.names.service import COMMANDS as NAMES_COMMANDS, NamesService
from p2pvpn.nat.traversal import Traversal
from p2pvpn.roles.relay import RelayService, limits_from_config
from p2pvpn.routing import RouteTable
from p2pvpn.session.manager import SessionManager
from p2pvpn.datagram.udp_socket import DatagramSocket, bind_target
from p2pvpn.supervisor import Failures
from p2pvpn.tun.device import LinuxTun, TunDevice
from p2pvpn.tun.readdress import replace_ipv4
from p2pvpn.wire.codec import PROTOCOL_ID

log = logging.getLogger(__name__)

TunFactory = Callable[[str, int, ipaddress.IPv4Interface, ipaddress.IPv6Interface], TunDevice]


MDNS_SEED_MIN, MDNS_SEED_MAX = 2.0, 30.0  # seconds between mDNS seed passes: after a find, and at most
NETLINK_THREADS = trio.CapacityLimiter(1)  # netlink dumps for status run in a thread, one at a time


def serves_dht_at_start(cfg: Config) -> bool:
    """Whether the DHT starts in server mode.

    auto is a client until AutoNAT finds us reachable, as go-libp2p's ModeAuto: a node behind a NAT must
    never enter the others' routing tables, where it would stall their lookups. Two exceptions serve at
    once: a node told it is public, and a node without bootstrap peers. The latter is the network's first
    node (an owner, a headless relay): everyone else bootstraps off it, and its AutoNAT has nobody to ask
    until they come, so as a client it would answer their first lookups with "protocol not supported".
    """
    if cfg.dht != "auto":
        return cfg.dht == "server"
    return cfg.reachability == "public" or (not cfg.bootstrap and cfg.reachability != "private")

class Node:
    def __init__(
        self,
        config: Config,
        key_pair: KeyPair,
        directory: Path,
        tun_factory: TunFactory = LinuxTun,
    ) -> None:
        if config.exit_via:  # dial-out only, through a relay (p2pvpn.exit.multihop)
            config = hidden_config(config)
        self.config = config
        self.key_pair = key_pair
        self.directory = directory
        self.peer_id: ID = identity.peer_id(key_pair)
        self.addresses = addressing.derive(self.peer_id.to_bytes(), config.network)
        self.membership = load_view(directory, config.network, self.peer_id.to_bytes(),  # None: no owned network
                                    skew=config.test_clock_skew)
        if self.membership is not None:  # the certificate decides our addresses (docs/protocol.md §15.9.1)
            self.addresses = certificate_addresses(self.membership.own, config.network)
        self.membership_service: MembershipService | None = None
        self.policy: PolicyService | None = None  # the network policy (docs/protocol.md §17), owned networks only
        if self.membership is not None:
            check_roles(self.membership.own, relay=config.relay, exit=config.exit)
        # The real TUN takes the offload setting; test factories choose their own.
        self._tun_factory = functools.partial(LinuxTun, offload=config.offload) if tun_factory is LinuxTun else tun_factory
        self.host: Host | None = None
        self.manager: SessionManager | None = None
        self.udp: DatagramSocket | None = None
        self.tun: TunDevice | None = None
        self.started = time.time()
        self.discovery: Discovery | None = None
        self.traversal: Traversal | None = None
        self.relay: RelayService | None = None
        self.exit_server: ExitServer | None = None
        self.exit_client: ExitClient | None = None
        self.mesh_lookups: MeshLookups | None = None  # full mesh: address lookups for unknown members (§12.2)
        self.names: NamesService | None = None  # DNS responder, resolved hook, ping/netcheck (p2pvpn.names)
        self.joins: JoinService | None = None  # answers /p2pvpn/join/1.0.0 when this node is in an owned network
        self._mdns_peers: set[ID] = set()
        self.failures = Failures()  # contained failures by kind (tunnels, control requests), for status
        self._stop = trio.Event()  # `p2pvpn down` / SIGTERM: close tunnels with Close frames, then unwind (cli_ops)
        self.metrics_bound: list[tuple[str, int]] = []  # where /metrics listens (p2pvpn.metrics), once up
        self.start_overrides: dict[str, Any] = {}  # the flags of `up`: a reload merges config.toml with them
        for pid, _ in config.peer_infos():
            if pid == self.peer_id:
                raise ConfigError("peers: the list contains this node's own peer ID")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. A setup failure raises its P2pvpnError itself, not wrapped in a group."""
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            raise_user_error(group)
            raise

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        cfg = self.config
        if cfg.exit or cfg.use_exit != "none":  # before the TUN: say what is missing in one line
            require_root("--exit" if cfg.exit else "--use-exit")
            require_nft()
        if cfg.use_exit != "none":
            require_ip()
            marking.install(MARK)  # before any libp2p socket exists (p2pvpn.exit.marking)
        for addr in cfg.listen:  # before the TUN too: a port in use is one line, with nothing to undo
            check_port_free(multiaddr.Multiaddr(addr))
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, control_path(cfg, self.directory), self.handle_control,
                                self.failures.reporter("control"))
            if cfg.metrics:  # read at scrape time from status (p2pvpn.metrics); nothing counted twice
                from p2pvpn import metrics

                self.metrics_bound = await nursery.start(metrics.serve, *metrics.parse_address(
                    cfg.metrics, cfg.metrics_public), functools.partial(metrics.node_snapshot, self))
            v4 = ipaddress.IPv4Interface((self.addresses.ipv4, addressing.OVERLAY_V4_PREFIXLEN))
            v6 = ipaddress.IPv6Interface((self.addresses.ipv6, addressing.OVERLAY_V6_PREFIXLEN))
            tun = self._tun_factory(cfg.tun, cfg.mtu, v4, v6)
            self.tun = tun
            try:
                host = Host(self.key_pair, cfg.listen, announce=cfg.announce, exclude_interfaces=(cfg.tun,),
                            mdns=cfg.mdns, limits=ResourceManager(Limits.from_config(cfg)))
                self.host = host
                host.on_handler_failure = self.failures.reporter("stream handler")
                async with host.running():
                    routes: RouteTable[ID] = RouteTable()
                    if cfg.udp:  # the datagram path's socket (docs/protocol.md §16.8)
                        self.udp = DatagramSocket(*bind_target(cfg.listen))
                        await self.udp.open()
                    manager = SessionManager(
                        host, tun, routes, cfg.network, self.addresses, cfg.mtu, cfg.queue_packets, cfg.keepalive,
                        allow_peers=[parse_peer_id(p) for p in cfg.allow_peers],
                        failures=self.failures, membership=self.membership,
                        udp=self.udp,
                    )
                    self.manager = manager
                    demand = manager.enable_on_demand(cfg.idle_timeout) if cfg.on_demand else None
                    manager.keep_exits = cfg.use_exit != "none"
                    manager.destinations.exit_role = cfg.exit  # an exit serves destinations outside the overlay
                    if Store(self.directory).exists():  # invites made with `p2pvpn invite` are read per request
                        view = self.membership  # its clock, so tests can move time for issuing and checking alike
                        self.joins = JoinService(Store(self.directory), self.key_pair, host.addrs,
                                                 (lambda: view.clock()) if view is not None else time.time)
                        host.set_handler(JOIN_PROTOCOL_ID, self.joins.handle)
                    if self.membership is not None:
                        self.membership_service = MembershipService(Store(self.directory), self.membership,
                                                                    manager, host)
                        manager.firewall = make_firewall(self.directory, self.membership, self.peer_id.to_bytes())
                        self.policy = PolicyService(self.directory, self.membership, manager, host, manager.firewall)
                    for pid, addr in cfg.peer_infos():
                        manager.add_static_peer(pid, [addr])
                    bootstrap = {p for p, _ in cfg.bootstrap_infos()}
                    host.is_member = lambda p: manager.known(p) or p in bootstrap  # bounded apart from strangers
                    async with (
                        self._exits(manager, routes),
                        trio.open_nursery() as inner,
                        self._discovery(host, manager) as discovery,
                    ):
                        self.traversal = Traversal(host, cfg, discovery.dht if discovery else None, discovery,
                                                   self._republish)
                        if self.membership_service is not None:
                            self.traversal.keeper.before_reserve = self.membership_service.present
                        if cfg.exit:  # multi-hop clients reach an exit only through a relay it holds a slot on
                            keep_relay_slots(self.traversal.keeper)
                        await inner.start(self.traversal.run)
                        if cfg.relay:
                            self.relay = RelayService(host, limits_from_config(cfg), self._is_member, host.limits,
                                                      host.is_member)
                            await inner.start(self.relay.run)
                        await inner.start(manager.run)
                        if self.membership_service is not None:
                            await inner.start(self.membership_service.run)
                        if self.policy is not None:
                            await inner.start(self.policy.run)
                        misses: Demand | None = demand
                        if demand is None and discovery is not None:  # full mesh: find on-demand members by address
                            self.mesh_lookups = MeshLookups(routes.in_overlay, discovery.lookup_address)
                            await inner.start(self.mesh_lookups.run)
                            misses = self.mesh_lookups
                        inner.start_soon(route_from_tun, tun, routes, manager.peers, manager.drops, manager.firewall,
                                         misses)
                        for exit_part in (self.exit_server, self.exit_client):
                            if exit_part is not None:
                                await inner.start(exit_part.run)
                        if discovery is not None:
                            await inner.start(discovery.run)
                            if cfg.mdns:
                                inner.start_soon(self._mdns_loop, host, discovery)
                        self.names = NamesService(self)
                        await inner.start(self.names.run)
                        log.info("node %s up: %s %s/%s on %s", self.peer_id, cfg.network, v4, v6, cfg.tun)
                        for addr in host.addrs():
                            log.info("listening on %s", addr)
                        task_status.started()
                        await self._stop.wait()
                        await ops.close_tunnels(manager)  # graceful stop: peers hear Close(NORMAL)
                        inner.cancel_scope.cancel()
            finally:
                tun.close()
                if self.udp is not None:
                    self.udp.close()
                nursery.cancel_scope.cancel()

    # -- exits ---------------------------------------------------------------

    @asynccontextmanager
    async def _exits(self, manager: SessionManager, routes: RouteTable[ID]) -> AsyncIterator[None]:
        """The exit role (forwarding, nft table) or exit use (policy routing), removed on the way out."""
        cfg = self.config
        if cfg.exit:
            self.exit_server = ExitServer(cfg, self.peer_id, self.directory, self._republish)
            with self.exit_server.running():
                yield
        elif cfg.use_exit != "none":
            pinned = None if cfg.use_exit == "auto" else parse_peer_id(cfg.use_exit)
            hidden = HiddenPath(cfg, manager.host, manager, lambda: self.discovery) if cfg.exit_via else None
            self.exit_client = ExitClient(cfg, self.peer_id, self.directory, manager, routes, pinned, hidden)
            if self.membership is not None:
                view = self.membership
                self.exit_client.role_allowed = lambda peer: view.allows(peer.to_bytes(), ROLE_EXIT)
            with self.exit_client.installed():
                yield
        else:
            yield

    # -- discovery -------------------------------------------------------------

    @asynccontextmanager
    async def _discovery(self, host: Host, manager: SessionManager) -> AsyncIterator[Discovery | None]:
        """The DHT and the discovery loops, unless the node runs with static peers only."""
        cfg = self.config
        if cfg.dht == "off":
            yield None
            return
        dht = Dht(host, cfg.network, server=serves_dht_at_start(cfg), validator=self._record_validator())
        async with dht.running():
            discovery = Discovery(
                dht, self.key_pair, self.peer_id, cfg.network,
                local=lambda: self.addresses,
                addrs=(lambda: []) if cfg.exit_via else host.advertised,  # --exit-via: publish no address
                bootstrap=cfg.bootstrap_infos(),
                on_record=self._on_record,
                on_expired=manager.forget,
                ttl=cfg.record_ttl,
                interval=cfg.discovery_interval,
                roles=self._roles,
                needs_refresh=self._unreachable,
                in_use=(lambda p: p in manager.peers and manager.peers[p].tunnel is not None) if cfg.on_demand else None,
                track_roles=("exit",) if cfg.on_demand and cfg.use_exit != "none" else (),
            )
            if manager.demand is not None:  # on demand: a packet's address finds its member (docs/protocol.md §18)
                manager.demand.resolve = discovery.lookup_address
            self.discovery = discovery
            if self.membership_service is not None:  # the revocation list lives in the DHT too
                self.membership_service.attach_dht(dht)
            if self.policy is not None:  # so does the policy
                self.policy.attach_dht(dht)
            manager.on_local_collision = self._on_collision
            yield discovery

    def _record_validator(self) -> RecordValidator:
        """Records of an owned network need a valid certificate, judged with our revocations (§15.9.4)."""
        view = self.membership
        if view is None:
            return RecordValidator(self.config.network)
        return RecordValidator(self.config.network, revocations=lambda: view.revocations.entries,
                               cert_clock=lambda: view.clock())

    def _roles(self) -> dict[str, object]:
        """What our record says beyond addresses: the roles, our relayed addresses, our certificate."""
        roles: dict[str, object] = {}
        if self.membership is not None:  # read each time: a renewal replaces it
            roles["certificate"] = self.membership.own.raw
        if self.config.relay:
            roles["relay"] = RelayRole(self.config.relay_max_reservations, self.config.relay_max_circuits)
        if self.exit_server is not None:
            roles["exit"] = self.exit_server.role()
        if self.traversal is not None:
            roles["relay_addrs"] = self.traversal.keeper.relay_addrs()
        return roles

    def _unreachable(self, peer_id: ID) -> bool:
        """A member we want a tunnel to and have none: its stored record may be outdated."""
        peer = self.manager.peers.get(peer_id) if self.manager is not None else None
        return peer is not None and peer.wanted and peer.tunnel is None

    def _republish(self) -> None:
        if self.discovery is not None:
            self.discovery.republish_soon()

    async def _is_member(self, peer_id: ID) -> bool:
        """For the relay role: members get the member limits (a static or allowed peer counts too)."""
        assert self.manager is not None
        if self.membership_service is not None:  # an owned network: the certificate decides, no DHT lookup
            known = self.manager.peers.get(peer_id)
            return self.membership_service.is_member(peer_id) or peer_id in self.manager.allow_peers \
                or (known is not None and known.learned_from == "static")
        known = self.manager.peers.get(peer_id)
        if known is not None and (known.learned_from == "static" or known.record is not None):
            return True
        if peer_id in self.manager.allow_peers:
            return True
        return self.discovery is not None and await self.discovery.fetch_record(peer_id, caused_by_peer=True) is not None

    def _on_record(self, record: NodeRecord, source: str) -> None:
        assert self.manager is not None
        # An owned network's records passed the certificate check (§15.9.4): they are members. Without
        # an owner a record proves only who a peer is: it is used for listed peers only (docs/protocol.md §10).
        if self.membership is None and not self.manager.listed(record.peer_id):
            return
        if record.peer_id in self._mdns_peers:
            source = "mdns"
        self.manager.learn(record, source)

    def _on_collision(self, record: NodeRecord) -> None:
        """A member whose peer ID sorts lower holds our IPv4: move to our next candidate."""
        assert self.manager is not None and self.discovery is not None
        if self.membership is not None:  # our certificate decides our address; no tie-break (§15.9.1)
            log.warning("%s claims our overlay address %s; our certificate keeps it", record.peer_id, record.ipv4)
            return
        taken = {p.record.ipv4 for p in self.manager.peers.values() if p.record is not None}
        taken.add(record.ipv4)
        index = self.addresses.index + 1
        while True:
            moved = addressing.derive(self.peer_id.to_bytes(), self.config.network, index)
            if moved.ipv4 not in taken:
                break
            index = moved.index + 1
        old = self.addresses
        log.warning("overlay address %s collides with %s (lower peer ID); moving to %s",
                    old.ipv4, record.peer_id, moved.ipv4)
        if isinstance(self.tun, LinuxTun):
            replace_ipv4(self.tun.name,
                         ipaddress.IPv4Interface((old.ipv4, addressing.OVERLAY_V4_PREFIXLEN)),
                         ipaddress.IPv4Interface((moved.ipv4, addressing.OVERLAY_V4_PREFIXLEN)))
        self.addresses = moved
        self.manager.move_local(moved)
        self.discovery.republish_soon()

    async def _mdns_loop(self, host: Host, discovery: Discovery) -> None:
        """Peers mDNS put in the peerstore seed the DHT; their records then arrive as usual.

        The pass walks the peerstore, so while it finds nobody new it runs less
        and less often (MDNS_SEED_MIN doubling up to MDNS_SEED_MAX s): an idle
        node does not walk a peerstore of every member every 2 s (issue 16).
        """
        delay = MDNS_SEED_MIN
        while True:
            connected = set(host.connected_peers())
            found = False
            for peer_id in host.known_peers_with_addrs():
                if peer_id not in self._mdns_peers and peer_id not in connected:
                    self._mdns_peers.add(peer_id)
                    found = True
                    addrs = host.libp2p.get_peerstore().addrs(peer_id)
                    await discovery.dht.bootstrap([(peer_id, a) for a in addrs[:1]])
            delay = MDNS_SEED_MIN if found else min(delay * 2, MDNS_SEED_MAX)
            await trio.sleep(delay)

    # -- control -------------------------------------------------------------

    async def handle_control(self, cmd: str) -> dict[str, Any]:
        """One control request (inside the control server's failure boundary)."""
        if cmd == "status":
            listen = await trio.to_thread.run_sync(self._listen_addrs, limiter=NETLINK_THREADS)
            return self.status(listen)
        if cmd == "peers":
            return {"peers": self.peers()}
        if cmd == "members":  # certificates presented to us, for `p2pvpn members`
            view = self.membership
            return {"certificates": [cert_text(c.raw) for c in view.presented.values()] if view else []}
        if cmd.partition(" ")[0] in NAMES_COMMANDS and self.names is not None:  # names, ping TARGET, netcheck
            return await self.names.handle(cmd)
        if cmd == "exits":
            return self.exit_client.describe() if self.exit_client is not None else list_exits(self.manager)
        if cmd in ops.COMMANDS:  # down, reload (p2pvpn.ops)
            return ops.handle(self, cmd)
        return {"error": f"unknown command {cmd!r}"}

    def peers(self) -> list[dict[str, Any]]:
        if self.manager is None:
            return []
        view = self.membership
        return [{**p.describe(), "name": ops.cert_name(view, p.peer_id)}
                for p in sorted(self.manager.peers.values(), key=lambda p: str(p.peer_id))]

    def stop(self) -> None:
        """Stop gracefully: tunnels closed with a Close frame, then TUN, routes and nft removed on the way out."""
        self._stop.set()

    def reload(self) -> dict[str, Any]:
        """SIGHUP: re-read config.toml's peers and allow lists (p2pvpn.ops.reload)."""
        return ops.reload(self)

    def _discovery_status(self) -> dict[str, Any] | None:
        d = self.discovery
        if d is None:
            return None
        return {
            "dht_mode": "server" if d.dht.server else "client",
            "dht_config": self.config.dht,
            "routing_table": d.dht.routing_table_size(),
            "members": len(d.known),
            "rejected_records": d.rejected + d.dht.rejected,
            "rejected_certificates": d.dht.validator.rejected["certificate"],
            "rejected_addrs": self.manager.rejected_addrs if self.manager else 0,
            "rounds": d.rounds,
            "last_published": d.last_published,
            "address_index": self.addresses.index,
            "address_lookups": dict(d.address_lookups),
            "reads": dict(d.dht.reads),
            "publishes": dict(d.publishes),
            "publish_failures": d.dht.publish_failures,
        }

    def _exit_client_status(self) -> dict[str, Any] | None:
        client = self.exit_client
        if client is None:
            return None
        return {"mode": client.mode, "current": str(client.current) if client.current else None,
                "since": client.since or None, "switches": max(0, len(client.history) - 1)}

    def _listen_addrs(self) -> list[str]:
        """Our addresses (a netlink dump when listening on 0.0.0.0): called in a thread, off the event loop."""
        return self.host.addrs() if self.host else []

    def status(self, listen: list[str] | None = None) -> dict[str, Any]:
        """The node's state; ``listen`` as computed off the loop (``_listen_addrs``), or computed here."""
        manager = self.manager
        return {
            "peer_id": str(self.peer_id),
            "network": self.config.network,
            "ipv4": str(self.addresses.ipv4),
            "ipv6": str(self.addresses.ipv6),
            "tun": self.config.tun,
            "mtu": self.config.mtu,
            "offload": bool(self.tun is not None and self.tun.offload),
            "udp": self.udp.describe() if self.udp is not None else None,
            "protocol": PROTOCOL_ID,
            "listen": self._listen_addrs() if listen is None else listen,
            "uptime": round(time.time() - self.started, 1),
            "drops": dict(manager.drops) if manager else {},
            "drops_total": dict(manager.drops_total()) if manager else {},
            "failures": self.failures.as_dict(),
            "icmp_sent": dict(manager.icmp_sent) if manager else {},
            "handshake_failures": dict(manager.handshake_failures) if manager else {},
            "address_collisions": manager.collisions if manager else 0,
            "limits": self.host.limits.status() if self.host else {},
            "dials": self.host.dials.status() if self.host else {},
            "discovery": self._discovery_status(),
            "on_demand": self.manager.demand.describe() if self.manager and self.manager.demand else None,
            "mesh_lookups": dict(self.mesh_lookups.counts) if self.mesh_lookups is not None else None,
            "nat": self.traversal.describe() if self.traversal else None,
            "relay": self.relay.status() if self.relay else None,
            "exit": self.exit_server.status() if self.exit_server else None,
            "exit_client": self._exit_client_status(),
            "membership": self._membership_status(),
            "policy": self.policy.status() if self.policy is not None else None,
            "dns": self.names.status() if self.names else None,
            "peers": self.peers(),
        }

    def _membership_status(self) -> dict[str, Any] | None:
        view, service = self.membership, self.membership_service
        if view is None:
            return None
        return {
            "network_id": view.network_id, "name": view.own.name, "expires": view.own.not_after,
            "certificate_problem": view.own_reason_invalid(), "revocation_seq": view.revocations.seq,
            "revoked_peers": len(view.revocations.entries), "members_seen": len(view.presented),
            "counters": dict(service.counters) if service else {},
            "joins": dict(self.joins.answered) if self.joins else {},
        }


def raise_user_error(group: BaseExceptionGroup) -> None:
    """If a nursery failed because of a P2pvpnError, raise that one error so the CLI prints one line."""
    matched, _rest = group.split(P2pvpnError)
    while matched is not None:
        first = matched.exceptions[0]
        if isinstance(first, BaseExceptionGroup):
            matched = first
            continue
        raise first from None
