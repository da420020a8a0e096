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
from typing import TYPE_CHECKING

from p2pvpn import addressing
from p2pvpn.errors import P2pvpnError
from p2pvpn.wire.codec import DATAGRAM_CAPABILITY, OFFLOAD_CAPABILITY, PROTOCOL_VERSION, CloseCode, Hello

if TYPE_CHECKING:
    from p2pvpn.membership.cert import Certificate
    from p2pvpn.membership.view import MembershipView

MEMBERSHIP_CAPABILITY = "membership/1"

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
    certificate: Certificate | None = None
    """The peer's valid membership certificate; None for a stranger (docs/protocol.md §15.9.1)."""


def make_hello(network: str, addresses: addressing.OverlayAddresses, mtu: int, offload: bool = False,
               certificate: bytes = b"", datagram: bool = False) -> Hello:
    """Our Hello; in an owned network it carries our certificate and the addresses in it."""
    return Hello(
        version=PROTOCOL_VERSION,
        network=network,
        ipv4=addresses.ipv4,
        ipv6=addresses.ipv6,
        mtu=mtu,
        capabilities=CAPABILITIES + ((OFFLOAD_CAPABILITY,) if offload else ())
        + ((MEMBERSHIP_CAPABILITY,) if certificate else ())
        + ((DATAGRAM_CAPABILITY,) if datagram else ()),
        address_index=addresses.index,
        certificate=certificate,
    )


def offload_agreed(ours: Hello, theirs: RemoteParams) -> bool:
    """Both Hellos announced gso/1: Data frames may carry offload_packets (both ways)."""
    return OFFLOAD_CAPABILITY in ours.capabilities and OFFLOAD_CAPABILITY in theirs.capabilities


def datagram_agreed(ours: Hello, theirs: RemoteParams) -> bool:
    """Both Hellos announced udp/1 (the connection must also be direct, docs/protocol.md §16.1)."""
    return DATAGRAM_CAPABILITY in ours.capabilities and DATAGRAM_CAPABILITY in theirs.capabilities


def check_hello(hello: object, remote_peer_id: bytes, network: str,
                membership: MembershipView | None = None) -> RemoteParams:
    """Accept ``hello`` from the noise-authenticated ``remote_peer_id`` or raise HandshakeError.

    In an owned network (``membership`` given) a Hello with a certificate is
    judged by the certificate, whose addresses replace the derivation; one
    without is a stranger, checked as before (the caller decides whether
    strangers are welcome).
    """
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
    if membership is not None and hello.certificate:
        return _check_certificate(hello, remote_peer_id, membership)
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


def _check_certificate(hello: Hello, remote_peer_id: bytes, membership: MembershipView) -> RemoteParams:
    from p2pvpn.membership.errors import MembershipError

    try:
        c = membership.verify(hello.certificate, remote_peer_id)
    except MembershipError as exc:
        raise HandshakeError(CloseCode.NOT_AUTHORIZED, f"certificate refused: {exc}") from None
    if hello.ipv4 != c.ipv4 or hello.ipv6 != c.ipv6:
        raise HandshakeError(
            CloseCode.ADDRESS_MISMATCH, f"peer claims {hello.ipv4}/{hello.ipv6}, its certificate says {c.ipv4}/{c.ipv6}"
        )
    return RemoteParams(
        ipv4=hello.ipv4, ipv6=hello.ipv6, mtu=hello.mtu, capabilities=tuple(hello.capabilities), certificate=c,
    )
