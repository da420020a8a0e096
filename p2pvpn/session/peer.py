"""What a node keeps per remote peer, across tunnels.

The queue and the counters belong to the peer, not to a stream, so a tunnel
can be replaced (reconnect, duplicate resolution) without losing queued
packets or resetting statistics.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.peer.id import ID

from p2pvpn.addressing import OverlayAddresses
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.stats import TrafficStats

if TYPE_CHECKING:
    from p2pvpn.session.tunnel import Tunnel


class PeerState(enum.StrEnum):
    CONNECTING = "connecting"  # we want a tunnel and are dialing
    UP = "up"                  # a tunnel is established
    DOWN = "down"              # no tunnel; waiting for the peer to dial us


@dataclass
class Peer:
    peer_id: ID
    addresses: OverlayAddresses
    queue: PacketQueue
    wanted: bool = False            # we keep a tunnel to it (static or discovered), so we dial it
    dial_addrs: list[multiaddr.Multiaddr] = field(default_factory=list)
    learned_from: str = "static"
    stats: TrafficStats = field(default_factory=TrafficStats)
    tunnel: Tunnel | None = None
    state: PeerState = PeerState.CONNECTING
    state_since: float = field(default_factory=time.time)
    mtu: int = 1400
    tunnel_changed: trio.Event = field(default_factory=trio.Event)
    last_error: str = ""
    record: Any = None              # the peer's latest verified NodeRecord, when learned from discovery
    record_fetched: float = 0.0
    path: tuple[str, str | None] | None = None  # ("direct"|"relayed", relay) of the last active tunnel
    path_since: float = 0.0         # when ``path`` last changed
    path_changes: int = 0
    migrate_after: float = 0.0      # monotonic time before which we do not try to move off a relay again
    addrs_changed: trio.Event = field(default_factory=trio.Event)  # new dial addresses: stop waiting, redial

    def set_tunnel(self, tunnel: Tunnel | None) -> None:
        """Swap the active tunnel and wake whoever waits on the change."""
        self.tunnel = tunnel
        new_state = PeerState.UP if tunnel else (PeerState.CONNECTING if self.wanted else PeerState.DOWN)
        if new_state != self.state:
            self.state = new_state
            self.state_since = time.time()
        if tunnel is not None:
            path = (str(tunnel.path.get("path")), tunnel.path.get("relay"))
            if path != self.path:
                self.path_changes += self.path is not None
                self.path = path
                self.path_since = time.time()
        self.tunnel_changed.set()
        self.tunnel_changed = trio.Event()

    def describe(self) -> dict[str, Any]:
        tunnel = self.tunnel
        path = tunnel.path if tunnel else {}
        return {
            "peer_id": str(self.peer_id),
            "ipv4": str(self.addresses.ipv4),
            "ipv6": str(self.addresses.ipv6),
            "state": str(self.state),
            "since": self.state_since,
            "learned_from": self.learned_from,
            "path": path.get("path"),
            "relay": path.get("relay"),
            "path_since": self.path_since or None,
            "path_changes": self.path_changes,
            "transport": path.get("transport"),
            "remote": path.get("remote"),
            "initiator": (str(tunnel.initiator) if tunnel else None),
            "rtt_ms": (round(tunnel.rtt * 1000, 3) if tunnel and tunnel.rtt is not None else None),
            "mtu": self.mtu,
            "offload": (tunnel.offload if tunnel else None),  # gso/1 agreed on the active tunnel
            **_datagram(tunnel),
            "queued": len(self.queue),
            "last_error": self.last_error,
            "roles": _roles(self.record),
            "record_seq": getattr(self.record, "seq", None),
            "record_age": (round(time.time() - self.record_fetched, 1) if self.record is not None else None),
            "record_expires": getattr(self.record, "expires", None),
            **self.stats.as_dict(),
        }


def _datagram(tunnel: Tunnel | None) -> dict[str, Any]:
    """The tunnel's data path (docs/protocol.md §16.9): "udp" or "stream"; None without a tunnel."""
    if tunnel is not None and tunnel.link is not None:
        return tunnel.link.describe()
    return {"data_path": "stream" if tunnel is not None else None, "udp_endpoint": None, "udp_epoch": 0,
            "udp_tx_packets": 0, "udp_rx_packets": 0}


def _roles(record: Any) -> list[str]:
    if record is None:
        return []
    return [role for role in ("relay", "exit") if getattr(record, role, None) is not None]
