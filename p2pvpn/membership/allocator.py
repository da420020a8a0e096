"""Unique names and overlay addresses for new certificates, chosen by the signer (§15.8).

The proposal is the old derivation from the peer ID (so addresses look the
same as without a network owner); a signer that already handed an address
or name to another member moves on to the next candidate. The certificate
decides: verifiers never re-derive anything.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection

from p2pvpn import addressing
from p2pvpn.membership.errors import MembershipError

V6_ALLOC_CONTEXT = b"p2pvpn/membership/v6-candidate/1\x00"
MAX_NAME_TRIES = 1000


def allocate_ipv4(peer_id: bytes, network: str, taken: Collection[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    index = 0
    while index <= addressing.MAX_ADDRESS_INDEX:
        ipv4, used = addressing.derive_ipv4(peer_id, network, index)
        if ipv4 not in taken:
            return ipv4
        index = used + 1
    net = addressing.OVERLAY_V4_NET  # 1025 derived candidates taken: take the first free host
    for host in range(1, net.num_addresses - 1):
        candidate = net.network_address + host
        if candidate not in taken:
            return candidate
    raise MembershipError(f"no free IPv4 address left in {net}")


def allocate_ipv6(peer_id: bytes, network: str, taken: Collection[ipaddress.IPv6Address]) -> ipaddress.IPv6Address:
    ipv6 = addressing.derive_ipv6(peer_id, network)
    prefix = addressing.network_v6_prefix(network).network_address.packed[:8]
    for i in range(1, 1025):  # 64-bit interface IDs: a second candidate is already astronomically rare
        if ipv6 not in taken and ipv6.packed[8:] != bytes(8):
            return ipv6
        iid = hashlib.sha256(V6_ALLOC_CONTEXT + network.encode() + b"\x00" + peer_id + i.to_bytes(4, "big")).digest()
        ipv6 = ipaddress.IPv6Address(prefix + iid[:8])
    raise MembershipError("no free IPv6 address found")


def unique_name(wanted: str, taken: Collection[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``... (kept within 63 characters)."""
    if wanted not in taken:
        return wanted
    for n in range(2, MAX_NAME_TRIES):
        suffix = f"-{n}"
        candidate = wanted[: 63 - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
    raise MembershipError(f"no free name like {wanted!r}")


def default_name(peer_text: str) -> str:
    """A name for a member nobody named: ``peer-`` and the last 8 characters of its peer ID, lowercased."""
    return "peer-" + peer_text[-8:].lower()
