"""NAT traversal for a member node, wired together: reachability -> DHT mode and relay slots; relayed dials; hole punching.

::

    AutoNat ──status──> Dht.set_server (dht = "auto")
       │                RelayKeeper.enable (PRIVATE) ──slots──> record.relay_addrs (republish)
    StopHandler ──accepted a relayed connection──> HolePuncher ──direct connection──> tunnel moves
    Host.relay_dialer = circuit.dial   (peers' /p2p-circuit addresses become dialable)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.peer.id import ID

from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.nat import circuit
from p2pvpn.nat.holepunch import HolePuncher
from p2pvpn.nat.reachability import AutoNat, Reachability
from p2pvpn.nat.reservations import RelayKeeper

if TYPE_CHECKING:
    from p2pvpn.config import Config
    from p2pvpn.discovery.dht import Dht
    from p2pvpn.discovery.service import Discovery

log = logging.getLogger(__name__)

MAX_RELAY_CANDIDATES = 16
TABLE_WATCH = 0.5        # seconds between looks at the routing table while it is empty ...
TABLE_WATCH_FULL = 10.0  # ... and once it is not: an idle node wakes 0.1 times a second for it, not 2
FIND_TIMEOUT = 20.0


class Traversal:
    def __init__(
        self,
        host: Host,
        cfg: Config,
        dht: Dht | None,
        discovery: Discovery | None,
        on_record_change: Callable[[], None],
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.dht = dht
        self.discovery = discovery
        self._on_record_change = on_record_change
        self.autonat = AutoNat(host, host.advertised, self._reachability_changed, forced=cfg.reachability)
        self.keeper = RelayKeeper(host, self._find_relays, cfg.relay_reservations, on_record_change)
        self.puncher = HolePuncher(host, enabled=cfg.hole_punch)
        self._static_relays = {p for p, _ in cfg.static_relay_infos()}
        self.stop = circuit.StopHandler(host, accept=self._expects_relayed, on_relayed=self.puncher.relayed)
        host.limits.external["stop_unexpected_relay"] = lambda: {"limit": 0, "hits": self.stop.refused, "in_use": 0}
        host.relay_dialer = functools.partial(circuit.dial, host)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.stop.install()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.puncher.run)
            await nursery.start(self.keeper.run)
            await nursery.start(self.autonat.run)
            if self.dht is not None:
                nursery.start_soon(self._republish_when_table_fills, self.dht)
            task_status.started()

    async def _republish_when_table_fills(self, dht: Dht) -> None:
        """Publish again once the routing table goes from empty to not: the last try reached nobody.

        With dht = "auto" peers serve the DHT only once AutoNAT has vouched for
        them, so a node's first publish often finds no server yet.

        A filled table is looked at less often (TABLE_WATCH_FULL): it matters
        again only if it empties, and a table that empties and fills again
        between two looks needs no extra publish (the scheduled ones follow).
        """
        empty = True
        while True:
            now_empty = dht.routing_table_size() == 0
            if empty and not now_empty:
                self._on_record_change()
            empty = now_empty
            await trio.sleep(TABLE_WATCH if empty else TABLE_WATCH_FULL)

    def _expects_relayed(self, relay: ID, peer: ID) -> bool:
        """Relayed connections come only through relays we hold a slot on (or configured ones).

        A STOP from any other peer is someone pretending to relay: refused and
        counted (``limits`` -> ``stop_unexpected_relay`` in status).
        """
        return relay in self.keeper.reservations or relay in self._static_relays

    def _reachability_changed(self, status: Reachability) -> None:
        self.keeper.enable(status == Reachability.PRIVATE and self.cfg.relay_reservations > 0)
        if self.dht is not None and self.cfg.dht == "auto" and status != Reachability.UNKNOWN:
            self.dht.set_server(status == Reachability.PUBLIC)
        self._on_record_change()

    async def _find_relays(self) -> Sequence[tuple[ID, Sequence[multiaddr.Multiaddr]]]:
        """Configured relays first, then relays of our network: providers of the relay role whose verified record says so."""
        out: list[tuple[ID, Sequence[multiaddr.Multiaddr]]] = [(p, [a]) for p, a in self.cfg.static_relay_infos()]
        if self.dht is None or self.discovery is None:
            return out
        with trio.move_on_after(FIND_TIMEOUT):
            providers = await self.dht.find_providers("relay")
            log.debug("relay providers: %s", [str(p.peer_id) for p in providers])
            for info in providers[:MAX_RELAY_CANDIDATES]:
                if info.peer_id == self.host.peer_id or any(info.peer_id == p for p, _ in out):
                    continue
                try:
                    record = await self.discovery.fetch_record(info.peer_id)
                except STREAM_ERRORS:
                    continue
                if record is not None and record.relay is not None and record.addrs:
                    out.append((info.peer_id, list(record.addrs)))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "reachability": self.autonat.describe(),
            "relay_slots": self.keeper.describe(),
            "hole_punching": self.puncher.describe(),
            "relayed_accepted": self.stop.accepted,
            "relayed_refused": self.stop.refused,
        }
