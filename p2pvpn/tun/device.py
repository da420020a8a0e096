"""The Linux TUN interface: packets in and out of the kernel, batched.

Reads drain everything the kernel has ready (up to a bound) after one
readiness wait, because per-packet overhead, not per-byte, limits a
userspace VPN. The interface is created non-persistent: closing the file
descriptor removes the interface with its addresses and routes, so a crash
leaves nothing behind.

Offload: for the same reason the interface is opened, when the kernel
allows it, with ``IFF_VNET_HDR`` and segmentation offload (``TUNSETOFFLOAD``:
checksums, TSO for IPv4/IPv6, USO where the kernel has it). Then every read
returns a *record*, a 10-byte virtio-net header plus a packet of up to
64 KiB (p2pvpn.dataplane.offload), and writes take records too. If the
kernel refuses, the interface is recreated without them and behaves
exactly as before; ``offload`` tells which one we got.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
from typing import Any, Protocol

import trio

from p2pvpn.dataplane.offload import VNET_HDR_LEN, ZERO_VNET_HDR
from p2pvpn.errors import TunError

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # skip IPv6 duplicate address detection: the address is ours by construction

# linux/if_tun.h
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUN_F_CSUM = 0x01           # we take packets with partial checksums
TUN_F_TSO4 = 0x02           # ... and TCP/IPv4 super-packets
TUN_F_TSO6 = 0x04           # ... and TCP/IPv6 super-packets
TUN_F_TSO_ECN = 0x08        # ... with CWR set (segmentation keeps it on the first segment)
TUN_F_USO4 = 0x20           # ... and UDP/IPv4 super-packets (Linux 6.2+)
TUN_F_USO6 = 0x40           # ... and UDP/IPv6 super-packets (Linux 6.2+)
_TSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
OFFLOAD_PROBES = (_TSO | TUN_F_USO4 | TUN_F_USO6, _TSO)
"""Offload sets tried in order; the first the kernel accepts is used."""


class TunDevice(Protocol):
    """What the data path needs from a TUN; tests substitute an in-memory one."""

    name: str
    mtu: int
    offload: bool
    """Reads return records (virtio-net header + packet); write_record works."""

    async def read_batch(self, max_packets: int) -> list[bytes]: ...

    def read_now(self, max_packets: int) -> list[bytes]:
        """What the kernel holds now, up to ``max_packets``, without waiting (maybe nothing)."""
        ...

    def write(self, packet: bytes) -> bool: ...

    def write_record(self, record: bytes) -> bool: ...

    def close(self) -> None: ...


class LinuxTun:
    """A configured ``IFF_TUN | IFF_NO_PI`` interface, with ``IFF_VNET_HDR`` and offload if possible."""

    def __init__(
        self,
        name: str,
        mtu: int,
        ipv4: ipaddress.IPv4Interface,
        ipv6: ipaddress.IPv6Interface,
        offload: bool = True,
    ) -> None:
        self.name = name
        self.mtu = mtu
        if not os.path.exists("/dev/net/tun"):
            raise TunError("/dev/net/tun does not exist; load the tun module (modprobe tun)")
        if _interface_exists(name):
            raise TunError(f"interface {name!r} already exists; choose another name with --tun")
        self._dev, self.offload_flags = _open_with_offload(name) if offload else (None, 0)
        if self._dev is None:
            self._dev = _open(name, vnet_hdr=False)
        self.offload = self.offload_flags != 0
        try:
            self._fd = self._dev.fileno()
            os.set_blocking(self._fd, False)
            _configure(name, mtu, ipv4, ipv6)
        except BaseException:
            self._dev.close()
            raise
        # A record is at most a 64 KiB super-packet behind its header.
        self._read_size = VNET_HDR_LEN + 65535 if self.offload else mtu + 64
        self._closed = False

    async def read_batch(self, max_packets: int) -> list[bytes]:
        """Wait until readable, then return up to ``max_packets`` packets, or records with offload (at least one)."""
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            if packets := self.read_now(max_packets):  # empty if another task drained it first (egress step 1')
                return packets

    def read_now(self, max_packets: int) -> list[bytes]:
        """What the kernel holds now, up to ``max_packets`` packets (or records), without waiting."""
        fd, size = self._fd, self._read_size
        packets: list[bytes] = []
        for _ in range(max_packets):
            try:
                packets.append(os.read(fd, size))
            except BlockingIOError:
                break
        return packets

    def write(self, packet: bytes) -> bool:
        """Hand one plain packet to the kernel; False if it refused (the caller counts it)."""
        try:
            if self.offload:
                os.writev(self._fd, (ZERO_VNET_HDR, packet))  # "nothing offloaded", without a copy
            else:
                os.write(self._fd, packet)
        except OSError:  # BlockingIOError included
            return False
        return True

    def write_record(self, record: bytes) -> bool:
        """Hand one record (virtio-net header + packet, offload only) to the kernel; False if refused."""
        try:
            os.write(self._fd, record)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dev.close()


def _open(name: str, vnet_hdr: bool) -> Any:
    """Create the interface (pytun's TunTapDevice); TunError with a reason a user can act on."""
    import pytun

    flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if vnet_hdr else 0)
    try:
        return pytun.TunTapDevice(name=name, flags=flags)
    except pytun.Error as exc:
        raise TunError(f"cannot create TUN interface {name!r}: {_tun_reason(exc)}") from None


def _open_with_offload(name: str) -> tuple[Any, int]:
    """The interface with IFF_VNET_HDR and the first offload set the kernel takes, or (None, 0).

    IFF_VNET_HDR is fixed at creation, so when no offload set is accepted the
    interface is closed again (which deletes it) for the caller to recreate
    plainly.
    """
    try:
        dev = _open(name, vnet_hdr=True)
    except TunError:
        return None, 0  # e.g. a kernel without IFF_VNET_HDR for TUN: the plain open reports real problems
    for flags in OFFLOAD_PROBES:
        try:
            fcntl.ioctl(dev.fileno(), TUNSETOFFLOAD, flags)
        except OSError as exc:
            log.debug("TUNSETOFFLOAD %#x refused: %s", flags, exc)
            continue
        log.info("TUN offload on: %s", ", ".join(_describe_offload(flags)))
        return dev, flags
    log.info("TUN offload unavailable (TUNSETOFFLOAD refused); one packet per read and write")
    dev.close()
    return None, 0


def _describe_offload(flags: int) -> list[str]:
    names = {TUN_F_CSUM: "csum", TUN_F_TSO4: "tso4", TUN_F_TSO6: "tso6", TUN_F_TSO_ECN: "tso-ecn",
             TUN_F_USO4: "uso4", TUN_F_USO6: "uso6"}  # fmt: skip
    return [name for bit, name in names.items() if flags & bit]


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
    from p2pvpn import rtnl

    try:
        index = rtnl.link_index(name)
        with rtnl.Rtnl() as nl:
            nl.set_link(index, mtu=mtu)
            nl.add_address(index, ipv4)
            _disable_ipv6_dad(name)
            nl.add_address(index, ipv6, flags=IFA_F_NODAD)
            nl.set_link(index, up=True)
    except OSError as exc:
        raise TunError(f"cannot configure {name!r}: {exc.strerror or exc}") from None


def _disable_ipv6_dad(name: str) -> None:
    """Belt and braces for kernels that ignore IFA_F_NODAD on add."""
    path = f"/proc/sys/net/ipv6/conf/{name}/accept_dad"
    try:
        with open(path, "w") as f:
            f.write("0")
    except OSError:
        pass  # IPv6 disabled or /proc read-only: the address add below reports the real problem
