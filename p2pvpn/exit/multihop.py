"""Multi-hop (``--exit-via``): every connection of ours goes through one circuit relay, so exits never see our address.

Theory of operation. Hiding our address from the exit takes more than
dialing the exit through a relay: the exit would also learn it from our
record, from identify, from a DHT query we send it, from an AutoNAT
dial-back or a hole punch. So a node with ``--exit-via`` is *dial-out
only*, and only through its relay:

* it listens on loopback only and publishes no direct address (the node
  sets this up; :func:`hidden_config`), serves the DHT as a client only and
  never hole-punches (DCUtR requests are refused, :meth:`HiddenPath.install`);
* :class:`HiddenPath` makes the session manager dial every peer only at
  its ``/p2p-circuit`` addresses: with ``--exit-via auto`` any relay the
  peer publishes (circuit relay v2 reaches a peer only through a relay it
  holds a slot on, so exits keep relay slots even when public:
  :func:`keep_relay_slots`), with ``--exit-via RELAY`` only that relay
  (built from the relay's address if the peer does not list it);
* a guard at py-libp2p's dial choke points (``Swarm._dial_addr_single_attempt``,
  used by every direct dial, and ``Swarm.dial_addr_as_responder``, used by
  hole punching) refuses direct connections to anyone but those relays and
  our bootstrap peers, whatever asked for them (DHT, AutoNAT, identify).
  It lives in p2pvpn.libp2p_compat and fails closed: if py-libp2p lacks
  those methods or grew another dial path, the node does not start.
* a relay is never the peer we dial through it, nor any peer with the exit
  role (:func:`plan_route`): an exit that lists itself as a relay in its
  record would otherwise get a direct connection, from our real address.
  Exit-role peers are never dialed directly, bootstrap peers included.

The relay sees our address and the exit's, never the traffic (Noise end to
end, as for every relayed tunnel); the exit sees the relay's address. A
bootstrap peer sees our address too: don't bootstrap from the exit you
hide from. Tunnels to other members also run through the relay.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

from p2pvpn import libp2p_compat
from p2pvpn.config import Config, parse_peer_id
from p2pvpn.host import STREAM_ERRORS, Host, circuit_relay, is_circuit, relay_of

if TYPE_CHECKING:
    from p2pvpn.discovery.service import Discovery
    from p2pvpn.nat.reservations import RelayKeeper
    from p2pvpn.session.manager import SessionManager

log = logging.getLogger(__name__)

DCUTR_PROTOCOL = "/libp2p/dcutr"
RESOLVE_RETRY = 2.0   # seconds between attempts to find the relay
FIND_TIMEOUT = 20.0
CLOSE_CHECK = 1.0     # seconds between checks for direct connections to exit-role peers


def hidden_config(cfg: Config) -> Config:
    """The node's settings with ``--exit-via``: loopback listener, DHT client, no hole punching.

    Refuses (CompatError) when the dial guard cannot be installed safely: fail closed.
    """
    libp2p_compat.check_dial_guard()
    listen = []
    for addr in cfg.listen:
        maddr = multiaddr.Multiaddr(addr)
        names = [p.name for p in maddr.protocols()]
        loopback = "127.0.0.1" if names[0] == "ip4" else "::1"
        listen.append(str(maddr).replace(f"/{names[0]}/{maddr.value_for_protocol(names[0])}/", f"/{names[0]}/{loopback}/", 1))
    return dataclasses.replace(cfg, listen=tuple(listen), dht="client" if cfg.dht != "off" else "off",
                               hole_punch=False, mdns=False, announce=())


def relay_fits(relay: ID | None, target: ID, exits: set[ID]) -> bool:
    """Whether a circuit through ``relay`` may carry our connection to ``target``.

    Not through the target itself (we would be connected to it directly)
    and not through any exit-role peer (an exit must never hold a direct
    connection from us, whichever exit is in use).
    """
    return relay is not None and relay != target and relay not in exits


def may_dial_direct(peer_id: ID, allowed: set[ID], relays: set[ID], exits: set[ID]) -> bool:
    """The guard's rule: bootstrap peers and our relays only, and never an exit-role peer."""
    return peer_id not in exits and (peer_id in allowed or peer_id in relays)


def plan_route(peer_id: ID, addrs: list[multiaddr.Multiaddr], *, allowed: set[ID], relays: set[ID], exits: set[ID],
               wanted: ID | None, named: tuple[ID, multiaddr.Multiaddr] | None) -> list[multiaddr.Multiaddr]:
    """Where we dial ``peer_id`` (sans-IO): directly if :func:`may_dial_direct`, else only through a fitting relay.

    ``wanted``: the relay named by ``--exit-via`` (None: auto, any relay the
    peer publishes); ``named``: that relay with its address once known, used
    when the peer does not list it. An empty list means: not reachable for us.
    """
    if may_dial_direct(peer_id, allowed, relays, exits):
        return addrs
    circuits = [a for a in addrs if is_circuit(a) and relay_fits(circuit_relay(a), peer_id, exits)
                and (wanted is None or circuit_relay(a) == wanted)]
    if not circuits and named is not None and relay_fits(named[0], peer_id, exits):
        circuits = [multiaddr.Multiaddr(f"{named[1]}/p2p/{named[0]}/p2p-circuit")]
    return circuits


class HiddenPath:
    def __init__(self, cfg: Config, host: Host, manager: SessionManager,
                 discovery: Callable[[], Discovery | None]) -> None:
        self.host = host
        self.manager = manager
        self._discovery = discovery
        self.wanted: ID | None = None if cfg.exit_via == "auto" else parse_peer_id(cfg.exit_via)
        self.bootstrap = dict(cfg.bootstrap_infos())
        self.pinned_exit: ID | None = None if cfg.use_exit in ("auto", "none") else parse_peer_id(cfg.use_exit)
        self.allowed: set[ID] = set(self.bootstrap)
        self.relay: ID | None = None          # the named relay, once its address is known
        self.relay_addr: multiaddr.Multiaddr | None = None
        self.relays: set[ID] = set()          # every relay we route some peer through
        self._published: dict[ID, list[multiaddr.Multiaddr]] = {}  # each peer's own addresses
        self.refused_direct = 0
        self.refused_punch = 0
        self.closed_direct = 0

    def exits(self) -> set[ID]:
        """Every peer known to hold the exit role (verified record), and the pinned exit."""
        out = {p.peer_id for p in self.manager.peers.values() if p.record is not None and p.record.exit is not None}
        if self.pinned_exit is not None:
            out.add(self.pinned_exit)
        return out

    def install(self) -> None:
        """Guard direct dials, refuse hole punching, route every peer through the relay."""
        libp2p_compat.install_dial_guard(self.host.libp2p, self._check)
        self.host.set_handler(DCUTR_PROTOCOL, self._refuse_punch)
        self.manager.rewrite_dial_addrs = self.rewrite
        for peer in list(self.manager.peers.values()):  # static peers, added before we were
            self._published.setdefault(peer.peer_id, list(peer.dial_addrs))
        self.reroute()

    def _check(self, peer_id: ID, addr: multiaddr.Multiaddr) -> None:
        if not may_dial_direct(peer_id, self.allowed, self.relays, self.exits()):
            self.refused_direct += 1
            log.debug("multi-hop: refused a direct dial to %s at %s", peer_id, addr)
            raise SwarmException(f"multi-hop: no direct connection to {peer_id}, only through the relay")

    async def _refuse_punch(self, stream: INetStream) -> None:
        self.refused_punch += 1
        try:
            await stream.reset()
        except STREAM_ERRORS:
            pass

    def rewrite(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """The session manager's hook: the peer's published ``addrs`` -> where we dial it."""
        self._published[peer_id] = list(addrs)
        return self._route(peer_id, addrs)

    def _route(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """Bootstrap peers and relays directly; everyone else only through a relay (nowhere if none fits)."""
        named = (self.relay, self.relay_addr) if self.relay is not None and self.relay_addr is not None else None
        exits = self.exits()
        planned = plan_route(peer_id, addrs, allowed=self.allowed, relays=self.relays, exits=exits,
                             wanted=self.wanted, named=named)
        if planned is not addrs:
            self.relays.update(r for a in planned if (r := circuit_relay(a)) is not None)
        return planned

    def reroute(self) -> None:
        """Apply :meth:`_route` to every peer now (after the named relay's address became known)."""
        for peer in list(self.manager.peers.values()):
            addrs = self._route(peer.peer_id, self._published.get(peer.peer_id, []))
            if addrs != peer.dial_addrs:
                peer.dial_addrs = addrs
                peer.addrs_changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """With a named relay: find its address (retrying), for peers that do not list it themselves."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._close_direct_to_exits)
            await self._resolve_named()

    async def _close_direct_to_exits(self) -> None:
        """A peer found to be an exit after we connected to it directly (a bootstrap peer, say) loses that connection."""
        while True:
            await trio.sleep(CLOSE_CHECK)
            network = self.host.libp2p.get_network()
            for peer_id in self.exits():
                if any(relay_of(conn) is None for conn in network.get_connections(peer_id)):
                    self.closed_direct += 1
                    log.warning("multi-hop: closing the direct connection to exit %s (it is also a bootstrap peer "
                                "or relay; don't bootstrap from the exit you hide from)", peer_id)
                    try:
                        await network.close_peer(peer_id)
                    except STREAM_ERRORS as exc:
                        log.debug("multi-hop: closing %s: %r", peer_id, exc)
                    self.reroute()

    async def _resolve_named(self) -> None:
        while self.wanted is not None and self.relay is None:
            with trio.move_on_after(FIND_TIMEOUT):
                found = await self._find()
                if found is not None:
                    self.relay, self.relay_addr = found
                    self.relays.add(self.relay)
                    log.info("multi-hop: connections go through relay %s (%s)", self.relay, self.relay_addr)
                    self.reroute()
                    return
            await trio.sleep(RESOLVE_RETRY)

    async def _find(self) -> tuple[ID, multiaddr.Multiaddr] | None:
        """The named relay's address: from the bootstrap list, else from its record in the DHT."""
        assert self.wanted is not None
        if self.wanted in self.bootstrap:
            return self.wanted, self.bootstrap[self.wanted]
        discovery = self._discovery()
        if discovery is None:
            return None
        try:
            record = await discovery.fetch_record(self.wanted)
        except STREAM_ERRORS as exc:
            log.debug("multi-hop: fetching the relay's record failed: %r", exc)
            return None
        if record is None or not record.addrs:
            return None
        return self.wanted, multiaddr.Multiaddr(str(record.addrs[0]))

    def describe(self) -> dict[str, Any]:
        return {"relay": str(self.wanted) if self.wanted else "auto", "relays_used": sorted(map(str, self.relays)),
                "refused_direct_dials": self.refused_direct, "refused_hole_punches": self.refused_punch,
                "closed_direct_to_exits": self.closed_direct}


def keep_relay_slots(keeper: RelayKeeper) -> None:
    """An exit holds relay slots even when public, so that multi-hop clients can reach it through a relay.

    Reachability switches the relay keeper (p2pvpn.nat.reservations) on when
    we are unreachable and off when we are reachable; an exit wants it on in
    both cases.
    """
    keeper.always = True
    keeper.enable(True)
