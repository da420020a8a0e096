"""The node's names part: the DNS responder and resolved hook while it runs, and ping/netcheck/names on request.

The node makes one ``NamesService`` and starts ``run`` in its nursery once
the tunnels run; ``handle`` answers the control commands ``names``,
``ping TARGET`` and ``netcheck`` (``COMMANDS``), and ``status`` is a part of
``p2pvpn status``. Only a node of an owned network has names (they come
from certificates); ping and netcheck work in every network.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from p2pvpn import libp2p_compat
from p2pvpn.host import STREAM_ERRORS
from p2pvpn.membership import cert
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.store import Store
from p2pvpn.names.netcheck import Observation, mapping_behaviour
from p2pvpn.names.resolved import ResolvedHook
from p2pvpn.names.server import DnsServer
from p2pvpn.names.table import NameTable, Zone, build_table, zone_names
from p2pvpn.names.targets import Target, UnknownTarget, resolve

if TYPE_CHECKING:
    from p2pvpn.node import Node
    from p2pvpn.session.peer import Peer

log = logging.getLogger(__name__)

COMMANDS = ("names", "ping", "netcheck")
PROBE_TIMEOUT = 2.0        # one ping probe waits this long for its reply
NETCHECK_PROBES = 8        # netcheck sends one UDP probe to at most this many peers ...
NETCHECK_PROBE_TIMEOUT = 1.0  # ... and waits this long for the replies
TABLE_MAX_AGE = 1.0        # seconds a built name table is reused
MAX_OPENED = 4096          # record certificates remembered opened


class NamesService:
    def __init__(self, node: Node) -> None:
        self.node = node
        view = node.membership
        self.zones: list[Zone] = []
        if view is not None:
            label = node.config.dns_label or Store(node.directory).network()[1]
            self.zones = zone_names(label, view.network_id, node.config.dns_suffix)
        self.zone = self.zones[0] if self.zones else None
        self.server: DnsServer | None = None
        self.hook: ResolvedHook | None = None
        self._table: tuple[float, NameTable] | None = None
        self._opened: dict[bytes, Certificate | None] = {}

    # -- the responder ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve DNS on our overlay addresses and hook the TUN into resolved, until cancelled."""
        node, cfg = self.node, self.node.config
        if self.zone is None or not cfg.dns:
            log.info("DNS responder off: %s", "disabled (dns = false)" if not cfg.dns else
                     "names come from membership certificates, and this network has no owner")
            task_status.started()
            return
        addresses = [node.addresses.ipv4, node.addresses.ipv6]
        self.server = DnsServer(addresses, self.table)
        self.hook = ResolvedHook(cfg.tun, [str(a) for a in addresses],
                                 [z.to_text(omit_final_dot=True) for z in self.zones], enabled=cfg.dns_resolved)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.server.run)
            try:
                await trio.to_thread.run_sync(self.hook.install)
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.hook.remove)

    def table(self) -> NameTable:
        """The name table from the certificates we know, rebuilt at most once per TABLE_MAX_AGE."""
        now = time.monotonic()
        if self._table is not None and now - self._table[0] < TABLE_MAX_AGE:
            return self._table[1]
        view, manager = self.node.membership, self.node.manager
        assert view is not None and self.zone is not None
        presented = [c for c in view.presented.values() if view.reason_invalid(c) is None]
        recorded = []
        for peer in (manager.peers.values() if manager is not None else ()):
            raw = getattr(peer.record, "certificate", b"")
            if raw and (c := self._open(raw)) is not None and view.reason_invalid(c) is None:
                recorded.append(c)
        table = build_table(self.zones, view.own, presented, recorded)
        self._table = (now, table)
        return table

    def _open(self, raw: bytes) -> Certificate | None:
        if raw not in self._opened:
            if len(self._opened) >= MAX_OPENED:
                self._opened.clear()
            try:
                self._opened[raw] = cert.open_certificate(raw, self.node.config.network)
            except MembershipError:
                self._opened[raw] = None
        return self._opened[raw]

    def status(self) -> dict[str, Any] | None:
        if self.server is None:
            return None
        return {**self.server.status(), "resolved": self.hook.status() if self.hook else None}

    # -- control ---------------------------------------------------------------------------------

    async def handle(self, cmd: str) -> dict[str, Any]:
        """``names``, ``ping TARGET`` or ``netcheck`` (the first word of ``cmd`` is in COMMANDS)."""
        word, _, argument = cmd.partition(" ")
        if word == "names":
            return self._names()
        if word == "ping":
            return await self.ping(argument)
        return await self.netcheck()

    def _names(self) -> dict[str, Any]:
        if self.zone is None:
            return {"zone": None, "zones": [], "names": [], "dns": None}
        table = self.table()
        return {
            "zone": self.zone.to_text(omit_final_dot=True),
            "zones": [z.to_text(omit_final_dot=True) for z in self.zones],
            "names": [{"name": m.name, "fqdn": table.fqdn(m), "peer_id": str(ID(m.peer_id)), "ipv4": str(m.ipv4),
                       "ipv6": str(m.ipv6)} for m in sorted(table.members.values(), key=lambda m: m.name)],
            "dns": self.status(),
        }

    def _own_target(self) -> Target:
        node = self.node
        name = node.membership.own.name if node.membership is not None else None
        return Target(str(node.peer_id), name, str(node.addresses.ipv4), str(node.addresses.ipv6))

    def _targets(self) -> list[Target]:
        """Every peer we could probe: the session manager's peers, named from the table where it can."""
        table = self.table() if self.zone is not None else None
        out = []
        for peer in (self.node.manager.peers.values() if self.node.manager is not None else ()):
            member = table.by_peer(peer.peer_id.to_bytes()) if table is not None else None
            out.append(Target(str(peer.peer_id), member.name if member else None, str(peer.addresses.ipv4),
                              str(peer.addresses.ipv6)))
        return out

    def _name_of(self, peer_id: str | None) -> str | None:
        if peer_id is None or self.zone is None:
            return None
        try:
            member = self.table().by_peer(ID.from_base58(peer_id).to_bytes())
        except ValueError:
            return None
        return member.name if member is not None else None

    async def ping(self, text: str) -> dict[str, Any]:
        """One probe to the peer ``text`` names, on the path its packets take now (docs: README, ping)."""
        zones = [z.to_text(omit_final_dot=True) for z in self.zones]
        try:
            target = resolve(text, self._targets(), zones, self._own_target())
        except UnknownTarget as exc:
            return {"error": str(exc)}
        manager = self.node.manager
        peer = manager.peers.get(ID.from_base58(target.peer_id)) if manager is not None else None
        out: dict[str, Any] = {"target": text, "peer_id": target.peer_id, "name": target.name,
                               "ipv4": target.ipv4, "ipv6": target.ipv6, "reply": False, "rtt_ms": None,
                               "path": None, "relay": None, "relay_name": None, "endpoint": None, "problem": None}
        tunnel = peer.tunnel if peer is not None else None
        if peer is None or tunnel is None:
            out["problem"] = f"no tunnel to this peer ({peer.state if peer is not None else 'not a peer yet'})"
            return out
        link = tunnel.link
        try:
            if link is not None and link.usable:
                out["path"], out["endpoint"] = "udp", link.describe()["udp_endpoint"]
                rtt = await link.echo(PROBE_TIMEOUT)
            else:
                out["path"], out["endpoint"] = tunnel.path.get("path"), tunnel.path.get("remote")
                out["relay"] = tunnel.path.get("relay")
                out["relay_name"] = self._name_of(out["relay"])
                rtt = await tunnel.echo(PROBE_TIMEOUT)
        except (trio.TooSlowError, OSError, *STREAM_ERRORS) as exc:  # the tunnel is going away
            out["problem"] = f"probe not sent: {type(exc).__name__}"
            return out
        out["transport"] = tunnel.path.get("transport")
        if rtt is None:
            out["problem"] = f"no reply within {PROBE_TIMEOUT:g} s"
        else:
            out["reply"], out["rtt_ms"] = True, round(rtt * 1000, 3)
        return out

    async def netcheck(self) -> dict[str, Any]:
        node = self.node
        traversal = node.traversal
        reach = traversal.autonat.describe() if traversal is not None else None
        observations = [Observation(o["observer"], o["external"], o["local"])
                        for o in (libp2p_compat.observed_addresses(node.host.libp2p) if node.host else [])]
        own_ips = await trio.to_thread.run_sync(_interface_ips)
        mapping = mapping_behaviour(observations, own_ips)
        relays = []
        if traversal is not None:
            for r in traversal.keeper.describe()["relays"]:
                relays.append({**r, "name": self._name_of(r["relay"])})
        return {
            "reachability": reach["status"] if reach else None,
            "reachability_detail": reach,
            "nat_mapping": mapping.verdict,
            "nat_mapping_why": mapping.why,
            "observed": [{"observer": o.observer, "external": _ep(o.external), "local": _ep(o.local)}
                         for o in observations],
            "relays": relays,
            "udp": await self._udp_check(),
            "exit": self._exit(),
        }

    async def _udp_check(self) -> dict[str, Any]:
        """The datagram path per peer, and one probe to each peer (up to NETCHECK_PROBES) whose path is udp."""
        node = self.node
        if node.udp is None:
            return {"enabled": False, "gets_through": None, "port": None, "peers": []}
        peers: list[Peer] = [p for p in (node.manager.peers.values() if node.manager else ()) if p.tunnel is not None]
        rows: list[dict[str, Any]] = []
        for peer in peers:
            tunnel = peer.tunnel
            assert tunnel is not None
            link = tunnel.link
            rows.append({"peer_id": str(peer.peer_id), "name": self._name_of(str(peer.peer_id)),
                         "path": tunnel.path.get("path"), "udp_agreed": link is not None,
                         "data_path": link.describe()["data_path"] if link is not None else None,
                         "probe_rtt_ms": None})

        async def probe(row: dict[str, Any], link: Any) -> None:
            rtt = await link.echo(NETCHECK_PROBE_TIMEOUT)
            row["probe_rtt_ms"] = round(rtt * 1000, 3) if rtt is not None else None

        async with trio.open_nursery() as nursery:
            probed = 0
            for peer, row in zip(peers, rows):
                link = peer.tunnel.link if peer.tunnel is not None else None
                if link is not None and link.usable and probed < NETCHECK_PROBES:
                    probed += 1
                    nursery.start_soon(probe, row, link)
        agreed = [r for r in rows if r["udp_agreed"]]
        through = any(r["data_path"] == "udp" or r["probe_rtt_ms"] is not None for r in agreed)
        return {"enabled": True, "port": node.udp.describe().get("port"),
                "gets_through": through if agreed else None, "peers": rows}

    def _exit(self) -> dict[str, Any] | None:
        node = self.node
        if node.exit_server is not None:
            return {"mode": "serving", "current": str(node.peer_id), "name": self._name_of(str(node.peer_id))}
        client = node.exit_client
        if client is None:
            return None
        current = str(client.current) if client.current else None
        return {"mode": client.mode, "current": current, "name": self._name_of(current), "since": client.since or None}


def _ep(endpoint: tuple[str, int] | None) -> str | None:
    if endpoint is None:
        return None
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _interface_ips() -> list[str]:
    """Every address on this namespace's interfaces (a netlink dump: run it in a thread)."""
    from p2pvpn import rtnl

    with rtnl.Rtnl() as nl:
        return [a.address for a in nl.addresses() if a.address]
