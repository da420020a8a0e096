"""The exit role and exit use, tied to a running node.

* :class:`ExitServer` (``--exit``): brings up :class:`ExitGateway`, reads its
  counters every second (``p2pvpn status``), turns the forwarded rate into
  the load published in our record, and republishes when the load moved.
* :class:`ExitClient` (``--use-exit``): installs the client's policy routing
  (:class:`ClientRoutes`), probes candidate exits through their tunnels,
  asks the :class:`Selector` which one to use and points the route table's
  default at it. ``--use-exit PEER_ID`` pins one exit (no failover; while it
  is down, internet traffic is dropped, never sent around the VPN).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from p2pvpn.addressing import network_v6_prefix
from p2pvpn.discovery.record import ExitRole
from p2pvpn.exit.client_routes import ClientRoutes
from p2pvpn.exit.forwarding import ExitGateway, load_permille
from p2pvpn.exit.multihop import HiddenPath
from p2pvpn.exit.nft import ExitSetupError
from p2pvpn.exit.policy import ExitPolicy
from p2pvpn.exit.selection import Candidate, Selector
from p2pvpn.host import STREAM_ERRORS
from p2pvpn.routing import RouteTable

if TYPE_CHECKING:
    from p2pvpn.config import Config
    from p2pvpn.session.manager import SessionManager
    from p2pvpn.session.peer import Peer

log = logging.getLogger(__name__)

COUNTER_INTERVAL = 1.0   # seconds between reads of the exit's nft counters
LOAD_INTERVAL = 5.0      # seconds over which the forwarded rate is measured
LOAD_STEP = 100          # permille the load must move before we republish ...
REPUBLISH_MIN = 30.0     # ... at most this often
TICK = 0.5               # seconds between exit choices
PROBE_INTERVAL = 1.0     # seconds between probes of one candidate
HISTORY = 32             # exit changes remembered for `p2pvpn exits`


class ExitServer:
    def __init__(self, cfg: Config, peer_id: ID, directory: Path, republish: Callable[[], None]) -> None:
        self.cfg = cfg
        self.policy = ExitPolicy.build(cfg.exit_allow, cfg.exit_deny, cfg.network)
        self.gateway = ExitGateway(peer_id.to_bytes(), cfg.tun, self.policy, directory, cfg.exit_client_rate_mbit)
        self._republish = republish
        self.load = 0
        self.published_load = 0
        self.throughput_mbit = 0.0
        self.counters: dict[str, dict[str, int]] = {}
        self.counters_at = 0.0

    @contextmanager
    def running(self) -> Iterator[ExitServer]:
        with self.gateway.running():
            self.counters = self.gateway.counters()
            yield self

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_load = time.monotonic()
        last_publish = 0.0
        while True:
            await trio.sleep(COUNTER_INTERVAL)
            try:
                self.counters = await trio.to_thread.run_sync(self.gateway.counters)
                self.counters_at = time.time()
                if time.monotonic() - last_load >= LOAD_INTERVAL:
                    last_load = time.monotonic()
                    self.throughput_mbit = await trio.to_thread.run_sync(self.gateway.throughput_mbit)
            except ExitSetupError as exc:  # someone deleted our table: say so, keep the node up
                log.error("exit: cannot read counters: %s", exc)
                continue
            self.load = load_permille(self.throughput_mbit, self.cfg.exit_capacity_mbit)
            now = time.monotonic()
            if abs(self.load - self.published_load) >= LOAD_STEP and now - last_publish >= REPUBLISH_MIN:
                self.published_load = self.load
                last_publish = now
                self._republish()

    def role(self) -> ExitRole:
        allow, deny = self.policy.summary()
        return ExitRole(allow=allow, deny=deny, capacity_mbit=self.cfg.exit_capacity_mbit,
                        load_permille=self.load)

    def status(self) -> dict[str, Any]:
        return {
            "table": self.gateway.table.name,
            "policy": self.policy.describe(),
            "capacity_mbit": self.cfg.exit_capacity_mbit,
            "client_rate_mbit": self.cfg.exit_client_rate_mbit,
            "load_permille": self.load,
            "throughput_mbit": round(self.throughput_mbit, 2),
            "counters": self.counters,
            "counters_at": self.counters_at,
        }


class ExitClient:
    def __init__(self, cfg: Config, peer_id: ID, directory: Path, manager: SessionManager,
                 routes: RouteTable[ID], pinned: ID | None, hidden: HiddenPath | None = None) -> None:
        self.cfg = cfg
        self.manager = manager
        self.routes = routes
        self.pinned = pinned
        self.hidden = hidden
        self.mode = "auto" if pinned is None else "pinned"
        self.routing = ClientRoutes(peer_id.to_bytes(), cfg.tun, directory)
        self.selector = Selector()
        self.current: ID | None = None
        self.since = 0.0
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self._v6_prefix = network_v6_prefix(cfg.network).network_address.packed[:8]
        # Set in an owned network: a record's exit role counts only if the peer's certificate allows it.
        self.role_allowed: Callable[[ID], bool] | None = None
        self._probed: dict[ID, float] = {}
        self._probing: set[ID] = set()

    @contextmanager
    def installed(self) -> Iterator[ExitClient]:
        with self.routing.installed():
            try:
                if self.pinned is not None:
                    self._use(self.pinned, "pinned by --use-exit")
                yield self
            finally:
                self.routes.set_default(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.hidden is not None:
                self.hidden.install()
                await nursery.start(self.hidden.run)
            task_status.started()
            while True:
                self._probe_all(nursery)
                if self.pinned is None:
                    choice = self.selector.choose(self.candidates(), trio.current_time())
                    if choice is not None and (self.current is None or choice != str(self.current)):
                        self._use(ID.from_base58(choice), self._why(choice))
                await trio.sleep(TICK)

    # -- candidates and probes ------------------------------------------------------

    def exit_peers(self) -> list[Peer]:
        """Peers offering the exit role (their verified record says so), plus the pinned one."""
        out = [p for p in self.manager.peers.values() if p.record is not None and p.record.exit is not None
               and (self.role_allowed is None or self.role_allowed(p.peer_id))]
        if self.pinned is not None and (pinned := self.manager.peers.get(self.pinned)) is not None and pinned not in out:
            out.append(pinned)
        return out

    def candidates(self) -> list[Candidate]:
        now = trio.current_time()
        return [self._candidate(peer, now) for peer in self.exit_peers()]

    @staticmethod
    def _candidate(peer: Peer, now: float) -> Candidate:
        tunnel = peer.tunnel
        role = peer.record.exit if peer.record is not None else None
        return Candidate(
            peer_id=str(peer.peer_id),
            connected=tunnel is not None,
            reply_age=(now - tunnel.last_reply) if tunnel is not None and tunnel.last_reply is not None else None,
            rtt=tunnel.rtt if tunnel is not None else None,
            load_permille=role.load_permille if role is not None else 0,
            capacity_mbit=role.capacity_mbit if role is not None else 0,
            permits=bool(role.allow) if role is not None else True,
        )

    def _probe_all(self, nursery: trio.Nursery) -> None:
        now = trio.current_time()
        for peer in self.exit_peers():
            tunnel = peer.tunnel
            if tunnel is None or peer.peer_id in self._probing or now - self._probed.get(peer.peer_id, -1e9) < PROBE_INTERVAL:
                continue
            self._probed[peer.peer_id] = now
            self._probing.add(peer.peer_id)
            nursery.start_soon(self._probe, peer.peer_id, tunnel)

    async def _probe(self, peer_id: ID, tunnel: Any) -> None:
        try:
            await tunnel.probe()
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("probe of exit %s failed: %r", peer_id, exc)
        finally:
            self._probing.discard(peer_id)

    # -- the choice -----------------------------------------------------------------

    def _why(self, choice: str) -> str:
        if self.current is None:
            return "first available exit"
        old = self.selector.scores.get(str(self.current))
        if old is None or not old.available:
            return f"failover: {old.reason if old else 'exit gone'}"
        return "a better exit held its lead"

    def _use(self, peer_id: ID, why: str) -> None:
        previous = self.current
        self.current = peer_id
        self.since = time.time()
        self.routes.set_default(peer_id, self._v6_prefix)
        self.history.append({"at": self.since, "exit": str(peer_id),
                             "previous": str(previous) if previous else None, "why": why})
        log.info("using exit %s (%s)", peer_id, why)

    def describe(self) -> dict[str, Any]:
        scores = self.selector.scores
        candidates = []
        now = trio.current_time()
        for peer in self.exit_peers():
            cand = self._candidate(peer, now)
            s = scores.get(cand.peer_id)
            candidates.append({
                **describe_exit(peer),
                "in_use": peer.peer_id == self.current,
                "available": s.available if s else None,
                "score": s.value if s else None,
                "reason": s.reason if s else None,
                "probe_age": round(cand.reply_age, 2) if cand.reply_age is not None else None,
            })  # fmt: skip
        return {
            "mode": self.mode,
            "via": self.hidden.describe() if self.hidden is not None else None,
            "current": str(self.current) if self.current else None,
            "since": self.since or None,
            "switches": len(self.history) - 1 if self.history else 0,
            "history": list(self.history),
            "candidates": candidates,
        }


def describe_exit(peer: Peer) -> dict[str, Any]:
    role = peer.record.exit if peer.record is not None else None
    tunnel = peer.tunnel
    return {
        "peer_id": str(peer.peer_id),
        "ipv4": str(peer.addresses.ipv4),
        "state": str(peer.state),
        "path": tunnel.path.get("path") if tunnel else None,
        "relay": tunnel.path.get("relay") if tunnel else None,
        "rtt_ms": round(tunnel.rtt * 1000, 2) if tunnel and tunnel.rtt is not None else None,
        "allow": list(role.allow) if role else None,
        "deny": list(role.deny) if role else None,
        "capacity_mbit": role.capacity_mbit if role else None,
        "load_permille": role.load_permille if role else None,
    }


def list_exits(manager: SessionManager | None) -> dict[str, Any]:
    """`p2pvpn exits` on a node that uses no exit: what the network offers, unscored."""
    peers = [] if manager is None else [p for p in manager.peers.values()
                                        if p.record is not None and p.record.exit is not None]
    return {"mode": "none", "via": None, "current": None, "since": None, "switches": 0, "history": [],
            "candidates": [{**describe_exit(p), "in_use": False, "available": None, "score": None,
                            "reason": None, "probe_age": None} for p in sorted(peers, key=lambda p: str(p.peer_id))]}

