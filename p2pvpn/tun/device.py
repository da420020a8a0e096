"""The Linux TUN interface: packets in and out of the kernel, batched.

Reads drain everything the kernel has ready (up to a bound) after one
readiness wait, because per-packet overhead, not per-byte, limits a
userspace VPN. The interface is created non-persistent: closing the file
descriptor removes the interface with its addresses and routes, so a crash
leaves nothing behind.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from typing import Protocol

import trio

from p2pvpn.errors import TunError

IFA_F_NODAD = 0x02  # skip IPv6 duplicate address detection: the address is ours by construction


class TunDevice(Protocol):
    """What the data path needs from a TUN; tests substitute an in-memory one."""

    name: str
    mtu: int

    async def read_batch(self, max_packets: int) -> list[bytes]: ...

    def write(self, packet: bytes) -> bool: ...

    def close(self) -> None: ...


class LinuxTun:
    """A configured ``IFF_TUN | IFF_NO_PI`` interface."""

    def __init__(
        self,
        name: str,
        mtu: int,
        ipv4: ipaddress.IPv4Interface,
        ipv6: ipaddress.IPv6Interface,
    ) -> None:
        import pytun

        self.name = name
        self.mtu = mtu
        if not os.path.exists("/dev/net/tun"):
            raise TunError("/dev/net/tun does not exist; load the tun module (modprobe tun)")
        if _interface_exists(name):
            raise TunError(f"interface {name!r} already exists; choose another name with --tun")
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        except pytun.Error as exc:
            raise TunError(f"cannot create TUN interface {name!r}: {_tun_reason(exc)}") from None
        try:
            self._fd = self._dev.fileno()
            os.set_blocking(self._fd, False)
            _configure(name, mtu, ipv4, ipv6)
        except BaseException:
            self._dev.close()
            raise
        self._read_size = mtu + 64
        self._closed = False

    async def read_batch(self, max_packets: int) -> list[bytes]:
        """Wait until readable, then return up to ``max_packets`` packets (at least one)."""
        fd = self._fd
        packets: list[bytes] = []
        while not packets:
            await trio.lowlevel.wait_readable(fd)
            for _ in range(max_packets):
                try:
                    packets.append(os.read(fd, self._read_size))
                except BlockingIOError:
                    break
        return packets

    def write(self, packet: bytes) -> bool:
        """Hand one packet to the kernel; False if it refused (the caller counts it)."""
        try:
            os.write(self._fd, packet)
        except (BlockingIOError, OSError):
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dev.close()


def _tun_reason(exc: OSError) -> str:
    text = str(exc)
    if exc.errno in (errno.EPERM, errno.EACCES) or "ermission" in text or "not permitted" in text:
        return "permission denied (run as root or grant CAP_NET_ADMIN)"
    if exc.errno == errno.EBUSY or "busy" in text:
        return "the name is in use"
    return text or type(exc).__name__


def _interface_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _configure(name: str, mtu: int, ipv4: ipaddress.IPv4Interface, ipv6: ipaddress.IPv6Interface) -> None:
    """Set MTU, both overlay addresses (their prefixes become on-link routes) and bring it up."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=name)
            ipr.link("set", index=index, mtu=mtu)
            ipr.addr("add", index=index, address=str(ipv4.ip), prefixlen=ipv4.network.prefixlen)
            _disable_ipv6_dad(name)
            ipr.addr(
                "add",
                index=index,
                address=str(ipv6.ip),
                prefixlen=ipv6.network.prefixlen,
                flags=IFA_F_NODAD,
            )
            ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise TunError(f"cannot configure {name!r}: {exc.args[-1] if exc.args else exc}") from None


def _disable_ipv6_dad(name: str) -> None:
    """Belt and braces for kernels that ignore IFA_F_NODAD on add."""
    path = f"/proc/sys/net/ipv6/conf/{name}/accept_dad"
    try:
        with open(path, "w") as f:
            f.write("0")
    except OSError:
        pass  # IPv6 disabled or /proc read-only: the address add below reports the real problem
