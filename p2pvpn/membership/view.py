"""What a running member knows and the session layer asks (docs/protocol.md §15.9), sans-IO.

The node holds one ``MembershipView``: its own certificate, the revocation
set, and the certificate each peer presented. The handshake asks
``verify``; the node's membership loop asks ``invalid_peers`` after every
revocation or clock tick and closes those tunnels.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from p2pvpn import addressing

from p2pvpn.membership import cert
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.revocation import RevocationSet

log = logging.getLogger(__name__)


@dataclass
class MembershipView:
    network_id: str
    own: Certificate
    revocations: RevocationSet
    clock: Callable[[], float] = time.time
    presented: dict[bytes, Certificate] = field(default_factory=dict)
    """peer_id_bytes -> the certificate that peer presented on its current tunnel."""
    skew: int = cert.CLOCK_SKEW
    """Clock difference tolerated at both ends of a validity window (config ``test_clock_skew``)."""

    def verify(self, data: bytes, peer_id: bytes, addresses: tuple[ipaddress.IPv4Address, ipaddress.IPv6Address] | None = None) -> Certificate:
        """A Hello's or a push's certificate, fully checked (§15.4); remembered for later re-checks.

        ``addresses`` (ipv4, ipv6): those of a live tunnel with the peer, which a pushed renewal must keep
        (§15.9.2), else the routes of one tunnel would change under it.
        """
        c = cert.verify(data, self.network_id, self.clock(), self.revocations.entries, peer_id, self.skew)
        if addresses is not None and (c.ipv4, c.ipv6) != addresses:
            raise MembershipError("certificate: its addresses are not those of the tunnel with this peer")
        self.presented[peer_id] = c
        return c

    def reason_invalid(self, c: Certificate) -> str | None:
        """Why a certificate accepted earlier is no longer good (revoked, expired), or None."""
        try:
            cert.check(c, self.clock(), self.revocations.entries, skew=self.skew)
        except MembershipError as exc:
            return str(exc)
        return None

    def invalid_peers(self, peers: Iterable[bytes]) -> dict[bytes, str]:
        """Of ``peers`` (with tunnels), those whose presented certificate is no longer good, with the reason."""
        out = {}
        for peer in peers:
            c = self.presented.get(peer)
            if c is not None and (reason := self.reason_invalid(c)) is not None:
                out[peer] = reason
        return out

    def allows(self, peer: bytes, role: int) -> bool:
        """The peer presented a certificate, still valid, that grants ``role`` (a ROLE_* bit)."""
        c = self.presented.get(peer)
        return c is not None and c.has_role(role) and self.reason_invalid(c) is None

    def own_reason_invalid(self) -> str | None:
        return self.reason_invalid(self.own)


def load_view(directory: Path, network: str, peer_id: bytes, clock: Callable[[], float] = time.time,
              skew: int = cert.CLOCK_SKEW) -> MembershipView | None:
    """The view of the node in ``directory``, or None when it is not a member of an owned network ``network``."""
    from p2pvpn.membership.store import Store

    store = Store(directory)
    if not store.exists() or store.network()[0] != network:
        return None
    own = store.certificate()
    if own is None:
        return None
    if own.peer_id != peer_id:
        raise MembershipError(f"{store.root / 'certificate'} belongs to another peer; run 'p2pvpn join' again")
    view = MembershipView(network, own, store.revocations(), clock, skew=skew)
    if (reason := view.own_reason_invalid()) is not None:
        log.warning("this node's own certificate is not valid: %s (peers will refuse it)", reason)
    return view


def certificate_addresses(own: Certificate, network: str) -> addressing.OverlayAddresses:
    """Our certificate's addresses, with the derivation index that gives its IPv4 (0 if none does).

    The index only matters to peers without membership/1 (§15.9.1): node records
    of an owned network carry the certificate, which decides (§15.9.4).
    """
    for index in range(addressing.MAX_ADDRESS_INDEX + 1):
        ipv4, used = addressing.derive_ipv4(own.peer_id, network, index)
        if ipv4 == own.ipv4:
            return addressing.OverlayAddresses(own.ipv4, own.ipv6, used)
        index = used
    return addressing.OverlayAddresses(own.ipv4, own.ipv6, 0)


def check_roles(own: Certificate, *, relay: bool, exit: bool) -> None:
    """Refuse to offer a role our certificate does not grant: no one would count it (§15.2)."""
    from p2pvpn.errors import ConfigError
    from p2pvpn.membership.network import ROLE_EXIT, ROLE_RELAY

    for wanted, role, name in ((relay, ROLE_RELAY, "relay"), (exit, ROLE_EXIT, "exit")):
        if wanted and not own.has_role(role):
            raise ConfigError(f"{name}: this node's certificate does not allow the {name} role; ask an admin for "
                              f"one that does (p2pvpn admit PEER_ID --roles {name} ...), then p2pvpn join it")
