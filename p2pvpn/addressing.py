"""Overlay addresses derived from peer IDs, so no allocator is needed.

Any node computes any other node's overlay addresses from its peer ID and the
network name alone (docs/protocol.md, "Overlay addressing"):

* IPv4: inside 100.64.0.0/10. ``h = SHA-256("p2pvpn/v4" 0x00 network 0x00
  peer_id_bytes 0x00 index_u32_be)``; the host part is the first 4 bytes of
  ``h`` as a big-endian integer modulo 2**22. Host parts 0 and 2**22-1 (the
  /10's network and broadcast addresses) are skipped by moving to the next
  index. ``index`` starts at 0; a node whose address collides with a peer's
  uses a later index (the discovery layer decides which).
* IPv6: a ULA /48 ``fd`` + the first 5 bytes of ``SHA-256("p2pvpn/ula" 0x00
  network)``, subnet 0, so the network's /64 is ``fdXX:XXXX:XXXX:0::/64``;
  the interface ID is the first 8 bytes of ``SHA-256("p2pvpn/v6" 0x00
  network 0x00 peer_id_bytes)``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

OVERLAY_V4_NET = ipaddress.IPv4Network("100.64.0.0/10")
OVERLAY_V4_PREFIXLEN = OVERLAY_V4_NET.prefixlen
OVERLAY_V6_PREFIXLEN = 64
_V4_HOST_BITS = 32 - OVERLAY_V4_PREFIXLEN
MAX_ADDRESS_INDEX = 1024


@dataclass(frozen=True, slots=True)
class OverlayAddresses:
    """A node's overlay addresses; ``index`` is the IPv4 derivation candidate used."""

    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    index: int = 0


def _sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join(parts)).digest()


def derive_ipv4(peer_id: bytes, network: str, index: int = 0) -> tuple[ipaddress.IPv4Address, int]:
    """Return the first usable IPv4 at or after candidate ``index`` and the index used."""
    net = network.encode()
    for candidate in range(index, index + MAX_ADDRESS_INDEX):
        digest = _sha256(b"p2pvpn/v4", net, peer_id, candidate.to_bytes(4, "big"))
        host = int.from_bytes(digest[:4], "big") % (1 << _V4_HOST_BITS)
        if host in (0, (1 << _V4_HOST_BITS) - 1):
            continue
        return ipaddress.IPv4Address(int(OVERLAY_V4_NET.network_address) + host), candidate
    raise ValueError("no usable IPv4 candidate")  # unreachable in practice: 2 of 4M hosts are skipped


def network_v6_prefix(network: str) -> ipaddress.IPv6Network:
    """The network's ULA /64, the same on every node of that network."""
    global_id = _sha256(b"p2pvpn/ula", network.encode())[:5]
    prefix = b"\xfd" + global_id + b"\x00\x00" + b"\x00" * 8
    return ipaddress.IPv6Network((prefix, OVERLAY_V6_PREFIXLEN))


def derive_ipv6(peer_id: bytes, network: str) -> ipaddress.IPv6Address:
    """The peer's address in the network's ULA /64."""
    iid = _sha256(b"p2pvpn/v6", network.encode(), peer_id)[:8]
    prefix = network_v6_prefix(network).network_address.packed[:8]
    return ipaddress.IPv6Address(prefix + iid)


def derive(peer_id: bytes, network: str, index: int = 0) -> OverlayAddresses:
    """All overlay addresses of ``peer_id`` (its raw multihash bytes) in ``network``."""
    ipv4, used = derive_ipv4(peer_id, network, index)
    return OverlayAddresses(ipv4=ipv4, ipv6=derive_ipv6(peer_id, network), index=used)
