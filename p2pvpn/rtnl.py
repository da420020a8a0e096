"""The few rtnetlink requests a node makes, over a plain ``socket(AF_NETLINK)`` (issue 16: RSS).

Why not pyroute2: a node needs five requests (dump links, dump addresses,
set a link's MTU and state, add and delete an address). pyroute2's
``IPRoute`` costs ~5 MiB of every node's RSS for them (its module bodies,
plus asyncio and unittest, which only it imports); measured in
docs/performance.md, "RSS, round 3". The kernel's rtnetlink ABI these
requests use (``linux/rtnetlink.h``, ``linux/if_addr.h``) is stable.

Layout: the message encoding and decoding is sans-IO (``encode_*``,
``parse_messages``, ``parse_attrs``, ``decode_*``; tested against fixed
bytes without a network), and :class:`Rtnl` only sends a request and reads
its answer. A refusal by the kernel is an :class:`OSError` with the kernel's
errno (``NetlinkError``), so callers keep turning it into one line.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
# linux/if_link.h, linux/if_addr.h, linux/if.h
IFLA_IFNAME = 3
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")    # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), device type, index, flags, change mask
_IFADDRMSG = struct.Struct("=BBBBI")   # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")         # length, type
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")

RECV_BUFFER = 1 << 16  # the kernel fills dump answers a page or two at a time
MAX_READS = 10_000     # reads for one request's answer (a dump of a host with very many addresses)
TIMEOUT = 5.0          # seconds the kernel has for each read


class NetlinkError(OSError):
    """The kernel refused a request (its errno and ``os.strerror``)."""


@dataclass(frozen=True)
class Message:
    """One netlink message: its header fields and payload (after the 16-byte header)."""

    type: int
    flags: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Address:
    """An interface address from a dump: ``address`` is IFA_ADDRESS (the peer's on point-to-point links)."""

    index: int
    family: int
    prefixlen: int
    address: str | None
    local: str | None


def _align(n: int) -> int:
    return (n + 3) & ~3


def encode_attr(kind: int, value: bytes) -> bytes:
    """One route attribute, padded to 4 bytes."""
    raw = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def encode_message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A netlink message (port id 0: the kernel fills in ours)."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def encode_dump(kind: int, seq: int) -> bytes:
    """A dump request for links (RTM_GETLINK) or addresses (RTM_GETADDR) of every family."""
    header = _IFINFOMSG.pack(0, 0, 0, 0, 0) if kind == RTM_GETLINK else _IFADDRMSG.pack(0, 0, 0, 0, 0)
    return encode_message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, header)


def encode_set_link(seq: int, index: int, *, mtu: int | None = None, up: bool | None = None) -> bytes:
    """RTM_NEWLINK on an existing link: set its MTU and/or bring it up or down (acknowledged)."""
    change = 0 if up is None else IFF_UP
    flags = IFF_UP if up else 0
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if mtu is not None:
        body += encode_attr(IFLA_MTU, _U32.pack(mtu))
    return encode_message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def encode_address(seq: int, kind: int, index: int, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                   flags: int = 0) -> bytes:
    """RTM_NEWADDR (fails if present) or RTM_DELADDR for ``interface`` on link ``index`` (acknowledged).

    IPv4 carries IFA_LOCAL too (= the address), as ``ip addr add`` sends it:
    the kernel keys IPv4 addresses by IFA_LOCAL.
    """
    family = socket.AF_INET if interface.version == 4 else socket.AF_INET6
    packed = interface.ip.packed
    body = _IFADDRMSG.pack(family, interface.network.prefixlen, flags & 0xFF, 0, index)
    if family == socket.AF_INET:
        body += encode_attr(IFA_LOCAL, packed)
    body += encode_attr(IFA_ADDRESS, packed)
    if flags:
        body += encode_attr(IFA_FLAGS, _U32.pack(flags))
    nl_flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if kind == RTM_NEWADDR else 0)
    return encode_message(kind, nl_flags, seq, body)


def parse_messages(data: bytes) -> Iterator[Message]:
    """The messages of one datagram from the kernel (stops at a truncated or malformed one)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"malformed netlink message at byte {offset} (length {length})")
        yield Message(kind, flags, seq, data[offset + _NLMSGHDR.size:offset + length])
        offset += _align(length)


def parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """Route attributes from ``offset`` on, by type (the last of a repeated type wins; nesting flag masked)."""
    attrs: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break  # a truncated attribute ends the list
        attrs[kind & 0x3FFF] = data[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return attrs


def error_of(message: Message) -> int:
    """The errno of an NLMSG_ERROR (0: an acknowledgement)."""
    (code,) = _ERRNO.unpack_from(message.payload)
    return -code


def decode_link(payload: bytes) -> tuple[int, str]:
    """(index, name) of an RTM_NEWLINK answer."""
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
    name = parse_attrs(payload, _IFINFOMSG.size).get(IFLA_IFNAME, b"")
    return index, name.split(b"\0", 1)[0].decode(errors="replace")


def decode_address(payload: bytes) -> Address:
    """An RTM_NEWADDR answer."""
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _IFADDRMSG.size)

    def text(kind: int) -> str | None:
        raw = attrs.get(kind)
        return str(ipaddress.ip_address(raw)) if raw is not None and len(raw) in (4, 16) else None

    return Address(index, family, prefixlen, text(IFA_ADDRESS), text(IFA_LOCAL))


class Rtnl:
    """A NETLINK_ROUTE socket for one caller at a time (blocking: run it in a thread from trio)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self._sock.settimeout(TIMEOUT)
        self._sock.bind((0, 0))
        self._seq = 0
        self.skipped = 0  # messages read that answer another (earlier, abandoned) request

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def request(self, seq: int, message: bytes) -> list[Message]:
        """Send ``message``; return its answer (a dump's messages, or [] for an ACK); raise on a refusal."""
        self._sock.send(message)
        answer: list[Message] = []
        for _ in range(MAX_READS):
            data = self._sock.recv(RECV_BUFFER)
            for msg in parse_messages(data):
                if msg.seq != seq:
                    self.skipped += 1  # an answer to an earlier request we stopped reading: not ours
                    continue
                if msg.type == NLMSG_ERROR:
                    code = error_of(msg)
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return answer
                if msg.type == NLMSG_DONE:
                    return answer
                answer.append(msg)
                if not msg.flags & NLM_F_MULTI:
                    return answer
        raise NetlinkError(errno.EIO, f"no end of the kernel's answer after {MAX_READS} reads")

    def links(self) -> dict[int, str]:
        """Interface index -> name."""
        seq = self.next_seq()
        return dict(decode_link(m.payload) for m in self.request(seq, encode_dump(RTM_GETLINK, seq))
                    if m.type == RTM_NEWLINK)

    def addresses(self) -> list[Address]:
        """Every address of every interface, both families."""
        seq = self.next_seq()
        return [decode_address(m.payload) for m in self.request(seq, encode_dump(RTM_GETADDR, seq))
                if m.type == RTM_NEWADDR]

    def set_link(self, index: int, *, mtu: int | None = None, up: bool | None = None) -> None:
        seq = self.next_seq()
        self.request(seq, encode_set_link(seq, index, mtu=mtu, up=up))

    def add_address(self, index: int, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                    flags: int = 0) -> None:
        seq = self.next_seq()
        self.request(seq, encode_address(seq, RTM_NEWADDR, index, interface, flags))

    def del_address(self, index: int, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        seq = self.next_seq()
        self.request(seq, encode_address(seq, RTM_DELADDR, index, interface))


def link_index(name: str) -> int:
    """The index of interface ``name``; NetlinkError(ENODEV) if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise NetlinkError(errno.ENODEV, os.strerror(errno.ENODEV)) from None
