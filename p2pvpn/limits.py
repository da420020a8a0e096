"""Resource limits: how much of the node a peer may hold, members and strangers apart (sans-IO).

Theory of operation (modelled on the libp2p resource manager: scopes,
limits per scope, a refusal is an error the caller handles, every refusal
counted; docs/limits.md lists each limit, its default and its config key):

* A *gauge* is one named limit: a number of things held at once, either in
  total or per key (a peer ID, an IP address, a protocol).
* :meth:`ResourceManager.acquire` takes one unit of several gauges at once
  (say: stranger handshakes in total, of this peer, from this IP) and
  returns a :class:`Ticket`, or None if any of them is full; then nothing is
  taken and the first full gauge counts a hit. ``Ticket.release`` gives
  everything back and is idempotent, so ``finally`` can always call it.
  A per-key want whose key is None is not counted (loopback has no per-IP
  limit).
* Members (known, static, allowed peers, relays and bootstrap peers) are
  bounded by their own gauges or not at all, never by the strangers' ones:
  a flood of fresh identities fills the stranger gauges and stops there.

Why not py-libp2p's ``rcmgr.ResourceManager`` (0.8.1, opt-in): its limits
know no member/stranger split (only an allowlist that bypasses every limit),
its per-protocol and per-peer stream scopes are not consulted on inbound
streams (only a global count is), it trips a circuit breaker and "graceful
degradation" that refuse everyone, members included, once a flood makes it
fail, and it fails open on its own errors.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Every limit with its default; the config keys are ``limit_<name>`` (p2pvpn.config)."""

    conns: int = 256
    conns_per_peer: int = 2
    conns_per_ip: int = 16
    streams_per_peer: int = 32
    streams_per_protocol: int = 256
    handshakes_known: int = 64
    handshakes: int = 32
    handshakes_per_peer: int = 2
    handshakes_per_ip: int = 8
    lookups: int = 8
    relay_hops: int = 64
    relay_hops_per_peer: int = 4
    relay_reservations_per_ip: int = 4
    relay_member_reservations: int = 32

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        """The ``limit_*`` keys of a :class:`p2pvpn.config.Config`."""
        return cls(**{f.name: getattr(cfg, f"limit_{f.name}") for f in dataclasses.fields(cls)})


KEYED = {  # gauges that count per key; the others count in total
    "conns_per_peer", "conns_per_ip", "streams_per_peer", "streams_per_protocol",
    "handshakes_per_peer", "handshakes_per_ip", "relay_hops_per_peer", "relay_reservations_per_ip",
}


# Not gauges themselves: shares kept for members out of a limit set elsewhere (the relay turns
# relay_member_reservations into the gauge "relay_stranger_reservations", see RelayPolicy).
SHARES = {"relay_member_reservations"}


class Gauge:
    """Units of one resource held at once, in total or per key, against one limit."""

    def __init__(self, name: str, limit: int, keyed: bool) -> None:
        self.name = name
        self.limit = limit
        self.keyed = keyed
        self.hits = 0
        self.held: Counter[object] = Counter()

    def full(self, key: object) -> bool:
        return self.held[key if self.keyed else None] >= self.limit

    def take(self, key: object) -> None:
        self.held[key if self.keyed else None] += 1

    def give(self, key: object) -> None:
        slot = key if self.keyed else None
        self.held[slot] -= 1
        if self.held[slot] <= 0:
            del self.held[slot]

    @property
    def in_use(self) -> int:
        """Total held (summed over keys for a keyed gauge)."""
        return sum(self.held.values())

    def describe(self) -> dict[str, int]:
        out = {"limit": self.limit, "hits": self.hits, "in_use": self.in_use}
        if self.keyed:
            out["busiest"] = max(self.held.values(), default=0)  # the key closest to the limit
        return out


class Ticket:
    """Units taken by one :meth:`ResourceManager.acquire`; release them once with :meth:`release`."""

    def __init__(self, parts: list[tuple[Gauge, object]]) -> None:
        self._parts = parts

    def release(self) -> None:
        parts, self._parts = self._parts, []
        for gauge, key in parts:
            gauge.give(key)

    @property
    def released(self) -> bool:
        return not self._parts


class ResourceManager:
    """The node's gauges; decisions only, no I/O (callers reset the stream or close the connection)."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.gauges: dict[str, Gauge] = {
            f.name: Gauge(f.name, getattr(limits, f.name), f.name in KEYED)
            for f in dataclasses.fields(limits) if f.name not in SHARES
        }
        # Refusals counted elsewhere (the relay's reservation policy, the STOP handler) and shown with ours.
        self.external: dict[str, Callable[[], dict[str, int]]] = {}

    def acquire(self, *wants: str | tuple[str, object]) -> Ticket | None:
        """One unit of each wanted gauge (``"name"`` or ``("name", key)``), or None and one hit."""
        parts: list[tuple[Gauge, object]] = []
        for want in wants:
            name, key = (want, None) if isinstance(want, str) else want
            gauge = self.gauges[name]
            if gauge.keyed and key is None:
                continue  # no key, no count (e.g. per-IP limits for loopback, p2pvpn.host.source_key)
            parts.append((gauge, key))
        for gauge, key in parts:
            if gauge.full(key):
                gauge.hits += 1
                return None
        for gauge, key in parts:
            gauge.take(key)
        return Ticket(parts)

    def add_gauge(self, name: str, limit: int, keyed: bool = False) -> Gauge:
        """A gauge whose limit derives from other settings (kept if it exists: one per node)."""
        if name not in self.gauges:
            self.gauges[name] = Gauge(name, limit, keyed)
        return self.gauges[name]

    def hit(self, name: str) -> None:
        """Count a refusal decided elsewhere against gauge ``name``."""
        self.gauges[name].hits += 1

    def status(self) -> dict[str, dict[str, int]]:
        """``{name: {"limit", "hits", "in_use"}}`` for ``status --json`` (key "limits")."""
        out = {name: gauge.describe() for name, gauge in self.gauges.items()}
        out.update({name: describe() for name, describe in self.external.items()})
        return out
