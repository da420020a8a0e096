"""The Hello exchange, sans-IO: build our Hello, judge theirs.

Both sides send a Hello at once and judge the other's independently, so
there is no state machine beyond "first frame must be a Hello". What a Hello
proves: noise already authenticated the remote peer ID; the Hello binds that
ID to overlay addresses we can recompute, which is what later lets the data
path drop packets with a forged source.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pvpn import addressing
from p2pvpn.errors import P2pvpnError
from p2pvpn.wire.codec import OFFLOAD_CAPABILITY, PROTOCOL_VERSION, CloseCode, Hello

MIN_MTU = 1280
MAX_MTU = 65535
CAPABILITIES: tuple[str, ...] = ("batch/1", "keepalive-rtt/1")
"""Always announced; OFFLOAD_CAPABILITY ("gso/1") is added when our TUN does offload."""


class HandshakeError(P2pvpnError):
    """The peer's Hello is unacceptable; ``code`` goes into our Close frame."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RemoteParams:
    """What we learned from an acceptable Hello."""

    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    mtu: int
    capabilities: tuple[str, ...]
    address_index: int = 0


def make_hello(network: str, addresses: addressing.OverlayAddresses, mtu: int, offload: bool = False) -> Hello:
    return Hello(
        version=PROTOCOL_VERSION,
        network=network,
        ipv4=addresses.ipv4,
        ipv6=addresses.ipv6,
        mtu=mtu,
        capabilities=CAPABILITIES + ((OFFLOAD_CAPABILITY,) if offload else ()),
        address_index=addresses.index,
    )


def offload_agreed(ours: Hello, theirs: RemoteParams) -> bool:
    """Both Hellos announced gso/1: Data frames may carry offload_packets (both ways)."""
    return OFFLOAD_CAPABILITY in ours.capabilities and OFFLOAD_CAPABILITY in theirs.capabilities


def check_hello(hello: object, remote_peer_id: bytes, network: str) -> RemoteParams:
    """Accept ``hello`` from the noise-authenticated ``remote_peer_id`` or raise HandshakeError."""
    if not isinstance(hello, Hello):
        raise HandshakeError(CloseCode.PROTOCOL_ERROR, f"expected Hello first, got {type(hello).__name__}")
    if hello.version != PROTOCOL_VERSION:
        raise HandshakeError(
            CloseCode.VERSION_MISMATCH, f"peer speaks protocol version {hello.version}, we speak {PROTOCOL_VERSION}"
        )
    if hello.network != network:
        raise HandshakeError(CloseCode.WRONG_NETWORK, f"peer is in network {hello.network!r}, we are in {network!r}")
    if not MIN_MTU <= hello.mtu <= MAX_MTU:
        raise HandshakeError(CloseCode.PROTOCOL_ERROR, f"peer MTU {hello.mtu} is outside {MIN_MTU}..{MAX_MTU}")
    if hello.address_index > addressing.MAX_ADDRESS_INDEX:
        raise HandshakeError(CloseCode.ADDRESS_MISMATCH, f"address index {hello.address_index} is too large")
    expected = addressing.derive(remote_peer_id, network, hello.address_index)
    if expected.index != hello.address_index or hello.ipv4 != expected.ipv4 or hello.ipv6 != expected.ipv6:
        raise HandshakeError(
            CloseCode.ADDRESS_MISMATCH,
            f"peer claims {hello.ipv4}/{hello.ipv6}, its peer ID gives {expected.ipv4}/{expected.ipv6}",
        )
    return RemoteParams(
        ipv4=hello.ipv4, ipv6=hello.ipv6, mtu=hello.mtu, capabilities=tuple(hello.capabilities),
        address_index=hello.address_index,
    )
