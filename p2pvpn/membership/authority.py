"""What an owner or admin decides when it signs a certificate, sans-IO (§15.8).

Input: the request (peer, wanted name, roles, groups), the certificates this
signer issued before, the revocations, ``now``. Output: the new certificate
and, for a key rotation, the old peer to revoke. Renewal keeps a member's
name, addresses, roles and groups; a new member gets a unique name and
unique addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from libp2p.peer.id import ID

from p2pvpn.membership import allocator, cert
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, Signer, is_dns_label

ADDRESS_HOLD = 30 * 86400
"""Seconds after expiry during which a member's name and addresses stay reserved for its renewal."""


@dataclass(frozen=True, slots=True)
class Admission:
    certificate: bytes
    replaces: bytes | None = None
    """peer_id_bytes of the member whose name and addresses moved to this peer (revoke it)."""


def _live(issued: Iterable[Certificate], revoked: Mapping[bytes, int], now: float) -> list[Certificate]:
    return [c for c in issued if not cert.is_revoked(c, revoked) and c.not_after + ADDRESS_HOLD > now]


def admit(
    signer: Signer, network: str, peer_id: bytes, *, issued: Iterable[Certificate], revoked: Mapping[bytes, int],
    now: float, name: str = "", roles: int | None = None, groups: tuple[str, ...] | None = None,
    lifetime: int | None = None, replace: bool = False, unique: bool = False,
) -> Admission:
    """Issue (or renew) ``peer_id``'s certificate.

    ``name`` taken by another member: with ``replace`` this peer takes over that
    member's name and addresses (a key rotation; the caller revokes the old
    peer); with ``unique`` a suffix makes it unique; otherwise it is an error.
    ``roles``/``groups`` None keep a renewed member's, or give none.
    """
    if name and not is_dns_label(name):
        raise MembershipError(f"name {name!r} is not a lowercase DNS label (a-z, 0-9, '-', at most 63)")
    live = _live(issued, revoked, now)
    mine = max((c for c in live if c.peer_id == peer_id), key=lambda c: c.not_before, default=None)
    others = [c for c in live if c.peer_id != peer_id]
    replaces: Certificate | None = None
    peer_text = ID(peer_id).to_base58()
    if name and mine is not None and mine.name == name:
        chosen = name
    elif name and any(c.name == name for c in others):
        holder = next(c for c in others if c.name == name)
        if replace:
            replaces, chosen = holder, name
        elif unique:
            chosen = allocator.unique_name(name, {c.name for c in others})
        else:
            raise MembershipError(f"name {name!r} belongs to {ID(holder.peer_id).to_base58()}; "
                                  "pass --replace to move it (and its addresses) to this peer")
    elif name:
        chosen = name
    elif mine is not None:
        chosen = mine.name
    else:
        chosen = allocator.unique_name(allocator.default_name(peer_text), {c.name for c in others})
    base = replaces or mine
    if base is not None:  # renewal, rename or key rotation: the addresses stay
        ipv4, ipv6 = base.ipv4, base.ipv6
    else:
        rest = [c for c in others if c is not replaces]
        ipv4 = allocator.allocate_ipv4(peer_id, network, {c.ipv4 for c in rest})
        ipv6 = allocator.allocate_ipv6(peer_id, network, {c.ipv6 for c in rest})
    if roles is None:
        roles = base.roles if base is not None else 0
    if groups is None:
        groups = base.groups if base is not None else ()
    if lifetime is None:
        lifetime = cert.ADMIN_LIFETIME if roles & ROLE_ADMIN else cert.MEMBER_LIFETIME
    start = int(now)
    if signer.issuer_certificate is not None:  # an admin cannot outlast its own certificate
        own = cert.open_certificate(signer.issuer_certificate, network)
        lifetime = min(lifetime, own.not_after - start)
        if lifetime <= 0:
            raise MembershipError("this admin's own certificate has expired; ask the owner for a new one")
    if not 0 < lifetime <= cert.MAX_LIFETIME:
        raise MembershipError(f"lifetime must be 1..{cert.MAX_LIFETIME} seconds")
    data = cert.issue(signer, network=network, peer_id=peer_id, name=chosen, ipv4=ipv4, ipv6=ipv6, roles=roles,
                      groups=tuple(groups), not_before=start, not_after=start + lifetime)
    return Admission(data, replaces.peer_id if replaces is not None else None)
