"""Counters for the data path. Every dropped packet is counted under a named reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class DropReason:
    NO_ROUTE = "no_route"            # egress: destination is not an overlay peer
    MALFORMED = "malformed"          # not an IPv4/IPv6 packet
    QUEUE_FULL = "queue_full"        # egress: the peer's queue was full
    PEER_DOWN = "peer_down"          # egress: queued packets discarded when a peer was removed
    TOO_BIG = "too_big"              # larger than the MTU agreed with the peer
    SPOOFED_SOURCE = "spoofed_source"  # ingress: source is not the sending peer's overlay address
    BAD_DESTINATION = "bad_destination"  # ingress: destination is neither ours nor a route we serve
    TUN_WRITE = "tun_write"          # ingress: the kernel refused the packet
    BAD_OFFLOAD = "bad_offload"      # a virtio-net header that breaks the offload rules (docs/protocol.md §5.3.1)


@dataclass
class TrafficStats:
    """One direction-pair of byte and packet counters plus drops by reason."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "drops": dict(self.drops),
        }
