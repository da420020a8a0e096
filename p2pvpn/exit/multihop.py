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

from p2pvpn.config import Config, parse_peer_id
from p2pvpn.host import STREAM_ERRORS, Host, circuit_relay, is_circuit

if TYPE_CHECKING:
    from p2pvpn.discovery.service import Discovery
    from p2pvpn.nat.reservations import RelayKeeper
    from p2pvpn.session.manager import SessionManager

log = logging.getLogger(__name__)

DCUTR_PROTOCOL = "/libp2p/dcutr"
RESOLVE_RETRY = 2.0   # seconds between attempts to find the relay
FIND_TIMEOUT = 20.0


def hidden_config(cfg: Config) -> Config:
    """The node's settings with ``--exit-via``: loopback listener, DHT client, no hole punching."""
    listen = []
    for addr in cfg.listen:
        maddr = multiaddr.Multiaddr(addr)
        names = [p.name for p in maddr.protocols()]
        loopback = "127.0.0.1" if names[0] == "ip4" else "::1"
        listen.append(str(maddr).replace(f"/{names[0]}/{maddr.value_for_protocol(names[0])}/", f"/{names[0]}/{loopback}/", 1))
    return dataclasses.replace(cfg, listen=tuple(listen), dht="client" if cfg.dht != "off" else "off",
                               hole_punch=False, mdns=False, announce=())


class HiddenPath:
    def __init__(self, cfg: Config, host: Host, manager: SessionManager,
                 discovery: Callable[[], Discovery | None]) -> None:
        self.host = host
        self.manager = manager
        self._discovery = discovery
        self.wanted: ID | None = None if cfg.exit_via == "auto" else parse_peer_id(cfg.exit_via)
        self.bootstrap = dict(cfg.bootstrap_infos())
        self.allowed: set[ID] = set(self.bootstrap)
        self.relay: ID | None = None          # the named relay, once its address is known
        self.relay_addr: multiaddr.Multiaddr | None = None
        self.relays: set[ID] = set()          # every relay we route some peer through
        self._published: dict[ID, list[multiaddr.Multiaddr]] = {}  # each peer's own addresses
        self.refused_direct = 0
        self.refused_punch = 0

    def install(self) -> None:
        """Guard direct dials, refuse hole punching, route every peer through the relay."""
        swarm: Any = self.host.libp2p.get_network()
        single, responder = swarm._dial_addr_single_attempt, swarm.dial_addr_as_responder

        async def guarded_single(addr: multiaddr.Multiaddr, peer_id: ID, source: Any = None) -> Any:
            self._check(peer_id, addr)
            return await single(addr, peer_id, source)

        async def guarded_responder(addr: multiaddr.Multiaddr, peer_id: ID, source: Any = None) -> Any:
            self._check(peer_id, addr)
            return await responder(addr, peer_id, source)

        swarm._dial_addr_single_attempt = guarded_single
        swarm.dial_addr_as_responder = guarded_responder
        self.host.set_handler(DCUTR_PROTOCOL, self._refuse_punch)
        self.manager.rewrite_dial_addrs = self.rewrite
        for peer in list(self.manager.peers.values()):  # static peers, added before we were
            self._published.setdefault(peer.peer_id, list(peer.dial_addrs))
        self.reroute()

    def _check(self, peer_id: ID, addr: multiaddr.Multiaddr) -> None:
        if peer_id not in self.allowed and peer_id not in self.relays:
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
        if peer_id in self.allowed or peer_id in self.relays:
            return addrs
        circuits = [a for a in addrs if is_circuit(a) and (self.wanted is None or circuit_relay(a) == self.wanted)]
        if not circuits and self.relay is not None and self.relay_addr is not None:
            circuits = [multiaddr.Multiaddr(f"{self.relay_addr}/p2p/{self.relay}/p2p-circuit")]
        self.relays.update(r for a in circuits if (r := circuit_relay(a)) is not None)
        return circuits

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
                "refused_direct_dials": self.refused_direct, "refused_hole_punches": self.refused_punch}


def keep_relay_slots(keeper: RelayKeeper) -> None:
    """An exit holds relay slots even when public, so that multi-hop clients can reach it through a relay.

    Reachability switches the relay keeper (p2pvpn.nat.reservations) on when
    we are unreachable and off when we are reachable; an exit wants it on in
    both cases.
    """
    keeper.always = True
    keeper.enable(True)
