"""``p2pvpn relay``: a headless relay and DHT server, without TUN and without root.

It is what a volunteer runs on a VPS (docs/relay-on-a-vps.md): a libp2p
host that answers DHT queries (so it doubles as a bootstrap node), offers
circuit relay v2 with the member/stranger limits of ``p2pvpn.roles.relay``,
answers AutoNAT dial-back requests, and publishes a record with the relay
role under the relay provider key. It is not a member of the overlay: it
has no TUN, provides no membership key, and nobody opens tunnels to it.

One nursery owns the control socket and the host; inside the host's
block a second one owns the DHT, discovery (to publish our record and to
know members), the relay and AutoNAT. Shutdown is cancellation, as in
``p2pvpn.node``; it unwinds inside out, so a graceful stop (``p2pvpn
down``, SIGTERM, SIGINT; p2pvpn.ops) ends the relayed circuits first, then
closes every connection and the listeners, then removes the control
socket, and ``p2pvpn down`` returns when the socket is gone.

A reload (``p2pvpn reload``, SIGHUP) reads config.toml again with the
flags the relay was started with (p2pvpn.ops.read_config) and applies
RELOADED_KEYS at once: the relay_* limits and the bootstrap list (the
peers discovery dials for the DHT, which admission spares the strangers'
connection limits). Reservations and circuits held stay, even where the
new limits are lower; the new limits apply to the next reservation or
circuit, the relay role in our record to the next publication. Other
changed keys wait for the next start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn import addressing, identity, ops
from p2pvpn.config import Config
from p2pvpn.control import server as control
from p2pvpn.discovery.dht import Dht
from p2pvpn.discovery.record import RecordValidator, RelayRole
from p2pvpn.discovery.service import Discovery
from p2pvpn.errors import ConfigError
from p2pvpn.host import Host
from p2pvpn.limits import Limits, ResourceManager
from p2pvpn.nat.reachability import AutoNat, Reachability
from p2pvpn.node import control_path
from p2pvpn.roles.relay import RelayService, limits_from_config

log = logging.getLogger(__name__)

RELOADED_KEYS = ("bootstrap", "relay_max_reservations", "relay_max_circuits", "relay_max_circuits_per_peer",
                 "relay_member_duration", "relay_member_bytes", "relay_stranger_duration", "relay_stranger_bytes",
                 "relay_serve_strangers")


class RelayNode:
    ROLE = "relay"  # in the replies of `down` (p2pvpn.ops.handle)

    def __init__(self, config: Config, key_pair: KeyPair, directory: Path) -> None:
        self.config = config
        self.key_pair = key_pair
        self.directory = directory
        self.peer_id: ID = identity.peer_id(key_pair)
        self.started = time.time()
        self.host: Host | None = None
        self.dht: Dht | None = None
        self.discovery: Discovery | None = None
        self.relay: RelayService | None = None
        self.autonat: AutoNat | None = None
        self.share: list[str] = []
        self.start_overrides: dict[str, Any] = {}  # the flags of `relay`: a reload merges config.toml with them
        self._bootstrap: set[ID] = {p for p, _ in config.bootstrap_infos()}  # known without a lookup (admission)
        self._stop = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or :meth:`stop`; returns once everything it created is gone."""
        cfg = self.config
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, control_path(cfg, self.directory), self.handle_control)
            host = Host(self.key_pair, cfg.listen, announce=cfg.announce,
                        limits=ResourceManager(Limits.from_config(cfg)))
            self.host = host
            host.is_member = lambda p: p in self._bootstrap or (self.discovery is not None and p in self.discovery.known)
            async with host.running():  # on the way out: every connection and listener closed
                async with trio.open_nursery() as services:
                    self.relay = RelayService(host, limits_from_config(cfg), self._is_member, host.limits,
                                              host.is_member)
                    await services.start(self.relay.run)
                    self.autonat = AutoNat(host, host.advertised, self._reachability_changed,
                                           forced=cfg.reachability)
                    await services.start(self.autonat.run)
                    if cfg.dht != "off":
                        await self._run_discovery(host, services)
                    self.share = host.addrs()
                    self._announce()
                    task_status.started()
                    await self._stop.wait()
                    log.info("stopping: %d circuit(s) and %d reservation(s) end, %d connection(s) close",
                             len(self.relay.active), len(self.relay.policy.slots), len(host.connected_peers()))
                    services.cancel_scope.cancel()  # circuits end (both streams reset), then the DHT and discovery
            log.info("relay %s stopped", self.peer_id)
            nursery.cancel_scope.cancel()  # the control socket last: `p2pvpn down` waits for it to go

    def stop(self) -> None:
        """`p2pvpn down`, SIGTERM, SIGINT: end the circuits, close the connections, remove the control socket."""
        self._stop.set()

    def reload(self) -> dict[str, Any]:
        """SIGHUP, `p2pvpn reload`: apply RELOADED_KEYS of config.toml (see the module docstring)."""
        try:
            new = ops.read_config(self)
        except ConfigError as exc:
            return ops.refused(exc)
        old = self.config
        later = ops.restart_needed(old, new, RELOADED_KEYS)
        changed = [k for k in RELOADED_KEYS if getattr(old, k) != getattr(new, k)]
        self.config = dataclasses.replace(old, **{k: getattr(new, k) for k in RELOADED_KEYS})
        self._bootstrap = {p for p, _ in self.config.bootstrap_infos()}
        if self.discovery is not None:
            self.discovery.bootstrap_peers = list(self.config.bootstrap_infos())
        kept = 0
        if self.relay is not None:
            self.relay.policy.set_limits(limits_from_config(self.config))
            kept = len(self.relay.policy.slots)
        log.info("reloaded %s: %s; %d reservation(s) kept", self.directory / "config.toml",
                 ", ".join(changed) + " changed" if changed else "no relay setting changed", kept)
        return {"reloaded": True, "role": self.ROLE, "changed": changed, "reservations_kept": kept,
                "restart_needed": later}

    async def _run_discovery(self, host: Host, nursery: trio.Nursery) -> None:
        cfg = self.config
        # In an owned network (the directory joined it: p2pvpn join CERT) records need certificates,
        # ours too, or no member counts our relay role (docs/protocol.md §15.9.4).
        from p2pvpn.membership.view import certificate_addresses, check_roles, load_view

        view = load_view(self.directory, cfg.network, self.peer_id.to_bytes())
        validator = RecordValidator(cfg.network)
        local = addressing.derive(self.peer_id.to_bytes(), cfg.network)
        roles: dict[str, object] = {}
        if view is not None:
            check_roles(view.own, relay=True, exit=False)
            validator = RecordValidator(cfg.network, revocations=lambda: view.revocations.entries)
            local = certificate_addresses(view.own, cfg.network)
            roles["certificate"] = view.own.raw
        self.dht = dht = Dht(host, cfg.network, server=cfg.dht != "client", validator=validator)
        await nursery.start(_run_dht, dht)
        self.discovery = Discovery(
            dht, self.key_pair, self.peer_id, cfg.network,
            local=lambda: local,
            addrs=host.advertised,
            bootstrap=cfg.bootstrap_infos(),
            on_record=lambda record, source: None,
            on_expired=lambda peer_id: None,
            ttl=cfg.record_ttl,
            interval=cfg.discovery_interval,
            roles=lambda: {"relay": RelayRole(self.config.relay_max_reservations, self.config.relay_max_circuits),
                           **roles},  # the limits of now: a reload may change them
            member=False,
        )  # fmt: skip
        await nursery.start(self.discovery.run)

    def _announce(self) -> None:
        """The lines an operator copies: what to give members as --bootstrap."""
        log.info("relay %s up for network %r", self.peer_id, self.config.network)
        for addr in self.share:
            log.info("share: %s", addr)
        if not self.config.announce and all(_looks_private(a) for a in self.share):
            log.warning("all listen addresses are private; behind a NAT or port forward, set --announce "
                        "to the public address members should dial")

    def _reachability_changed(self, status: Reachability) -> None:
        if status == Reachability.PRIVATE:
            log.warning("AutoNAT: peers cannot dial us back; nodes behind NATs will not reach this relay "
                        "(open the port, or set --announce to the forwarded address)")

    async def _is_member(self, peer_id: ID) -> bool:
        d = self.discovery
        if d is None:
            return False
        if peer_id in d.known:
            return True
        return await d.fetch_record(peer_id, caused_by_peer=True) is not None

    # -- control ---------------------------------------------------------------

    def handle_control(self, cmd: str) -> dict[str, Any]:
        if cmd in ops.COMMANDS:  # down, reload (p2pvpn.ops)
            return ops.handle(self, cmd)
        if cmd == "status":
            return self.status()
        if cmd == "peers":
            return {"peers": []}
        return {"error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        d = self.discovery
        return {
            "role": "relay",
            "peer_id": str(self.peer_id),
            "network": self.config.network,
            "listen": self.share,
            "uptime": round(time.time() - self.started, 1),
            "connected_peers": len(self.host.connected_peers()) if self.host else 0,
            "reachability": self.autonat.describe() if self.autonat else None,
            "discovery": None if d is None else {
                "dht_mode": "server" if d.dht.server else "client",
                "routing_table": d.dht.routing_table_size(),
                "members": len(d.known),
                "rejected_records": d.rejected,
                "last_published": d.last_published,
            },
            "relay": self.relay.status() if self.relay else None,
            "limits": self.host.limits.status() if self.host else {},
            "peers": [],
        }


async def _run_dht(dht: Dht, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with dht.running():
        task_status.started()
        await trio.sleep_forever()


def _looks_private(addr: str) -> bool:
    import ipaddress

    parts = addr.split("/")
    try:
        ip = ipaddress.ip_address(parts[2])
    except (IndexError, ValueError):
        return False
    return ip.is_private or ip.is_loopback
