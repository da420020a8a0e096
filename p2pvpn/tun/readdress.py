"""Move the TUN's overlay IPv4 (after an address collision), without touching anything else."""

from __future__ import annotations

import ipaddress

from p2pvpn.errors import TunError


def replace_ipv4(ifname: str, old: ipaddress.IPv4Interface, new: ipaddress.IPv4Interface) -> None:
    """Add the new address before removing the old one so the on-link route never disappears.

    Both are in the overlay prefix, so the new one is a *secondary* address,
    and Linux deletes the secondaries with their primary unless
    ``promote_secondaries`` is set (it is not in a fresh namespace): set it
    for this interface, and add the new address again if it went anyway.
    """
    from p2pvpn import rtnl

    _promote_secondaries(ifname)
    try:
        index = rtnl.link_index(ifname)
        with rtnl.Rtnl() as nl:
            nl.add_address(index, new)
            nl.del_address(index, old)
            if not any(a.index == index and a.local == str(new.ip) for a in nl.addresses()):
                nl.add_address(index, new)
    except OSError as exc:
        raise TunError(f"cannot move {ifname} from {old} to {new}: {exc.strerror or exc}") from None


def _promote_secondaries(ifname: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries", "w") as f:
            f.write("1")
    except OSError:
        pass  # /proc read-only or no such interface: the re-add above (or the add's own error) covers it
