"""Move the TUN's overlay IPv4 (after an address collision), without touching anything else."""

from __future__ import annotations

import ipaddress

from p2pvpn.errors import TunError


def replace_ipv4(ifname: str, old: ipaddress.IPv4Interface, new: ipaddress.IPv4Interface) -> None:
    """Add the new address before removing the old one so the on-link route never disappears."""
    from pyroute2.iproute.linux import IPRoute  # not pyroute2/__init__ (p2pvpn.libp2p_import)
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=ifname)
            ipr.addr("add", index=index, address=str(new.ip), prefixlen=new.network.prefixlen)
            ipr.addr("del", index=index, address=str(old.ip), prefixlen=old.network.prefixlen)
    except (NetlinkError, ValueError) as exc:
        raise TunError(f"cannot move {ifname} from {old} to {new}: {exc}") from None
