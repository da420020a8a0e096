"""Connection tracking for the firewall, sans-IO: flows keyed by 5-tuple, with timeouts (docs/protocol.md §17.5).

Theory of operation: a flow is known by the key its *initiator* sees,
``proto (1 byte) || initiator address || responder address || initiator
port (2 bytes) || responder port (2 bytes)``: for an IPv4 packet without
options that is byte 9 and bytes 12-23 of the packet as they stand, so the
data path slices its key out of the packet without parsing it. A packet
in either direction finds its flow with one of two dict lookups (its own
tuple, or the reversed one). Every packet of a flow pushes
its expiry out by the timeout of the flow's state; TCP moves through
handshake -> established -> closing on the flags it sees (no sequence
number checks: the tunnel already authenticates every packet's sender).

The table is bounded: when full, the oldest flow (insertion order) goes,
counted as ``evicted``; expired flows are dropped lazily on lookup and by
``sweep`` (the node calls it every few seconds), counted as ``expired``.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from p2pvpn.policy.flow import ACK, FIN, RST, SYN, TCP, UDP

Key = bytes


def make_key(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> Key:
    return bytes((proto,)) + src + dst + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


def responder_port(key: Key) -> int:
    return int.from_bytes(key[-2:], "big")


class State(enum.IntEnum):
    OPEN = 0          # not TCP
    HANDSHAKE = 1     # TCP: SYN seen, no answer yet
    ESTABLISHED = 2   # TCP: the responder answered
    CLOSING = 3       # TCP: FIN or RST seen


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds a flow lives after its last packet, by state (Nebula's defaults where it has them)."""

    tcp_handshake: float = 30.0
    tcp_established: float = 3600.0
    tcp_closing: float = 30.0
    udp: float = 180.0
    icmp: float = 30.0
    other: float = 180.0


@dataclass(slots=True)
class Entry:
    expires: float
    state: State
    peer: bytes | None
    """The initiating peer (its peer_id_bytes) for a flow a peer opened to us; None for a flow we opened."""
    seq: int
    """The policy seq under which an inbound flow was admitted (re-checked when the policy changes)."""


class ConnTrack:
    def __init__(self, max_entries: int = 65536, timeouts: Timeouts = Timeouts()) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.timeouts = timeouts
        self.flows: dict[Key, Entry] = {}
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.flows)

    def get(self, key: Key, now: float) -> Entry | None:
        entry = self.flows.get(key)
        if entry is not None and entry.expires <= now:
            del self.flows[key]
            self.counters["expired"] += 1
            return None
        return entry

    def open(self, key: Key, flags: int, peer: bytes | None, seq: int, now: float) -> Entry:
        """A new flow whose first packet (from the initiator) had TCP ``flags``."""
        flows = self.flows
        if key not in flows and len(flows) >= self.max_entries:
            oldest = next(iter(flows))
            if flows[oldest].expires <= now:
                self.counters["expired"] += 1
            else:
                self.counters["evicted"] += 1
            del flows[oldest]
        if key[0] == TCP:
            state = State.HANDSHAKE if flags & (SYN | ACK) == SYN else State.ESTABLISHED
            if flags & (FIN | RST):
                state = State.CLOSING
        else:
            state = State.OPEN
        entry = Entry(now + self._timeout(key[0], state), state, peer, seq)
        flows[key] = entry
        self.counters["opened"] += 1
        return entry

    def seen(self, key: Key, entry: Entry, flags: int, from_initiator: bool, now: float) -> None:
        """A packet of a known flow: advance the TCP state, push the expiry out."""
        if key[0] == TCP:
            if flags & (FIN | RST):
                entry.state = State.CLOSING
            elif entry.state is State.HANDSHAKE and not from_initiator and flags & ACK:
                entry.state = State.ESTABLISHED
        entry.expires = now + self._timeout(key[0], entry.state)

    def remove(self, key: Key) -> None:
        self.flows.pop(key, None)

    def sweep(self, now: float) -> int:
        """Drop every expired flow (at most ``max_entries`` to look at); returns how many went."""
        gone = [key for key, entry in self.flows.items() if entry.expires <= now]
        for key in gone:
            del self.flows[key]
        self.counters["expired"] += len(gone)
        return len(gone)

    def _timeout(self, proto: int, state: State) -> float:
        t = self.timeouts
        if proto == TCP:
            return (t.tcp_handshake, t.tcp_established, t.tcp_closing)[state - 1] if state else t.tcp_established
        if proto == UDP:
            return t.udp
        if proto in (1, 58):
            return t.icmp
        return t.other
