"""``recvmmsg(2)`` for the datagram socket, through ctypes: many datagrams per syscall.

Why: a link without GRO (the WAN emulator, many NICs under loss) hands the
socket one datagram per ``recvmsg``, and in Python each of those calls costs
more than the kernel's work behind it (a call, a tuple, a list of cmsgs, an
address tuple). Python's socket module has no ``recvmmsg``, so this calls
libc's with buffers allocated once: ``slots`` iovecs of RECV_SIZE bytes (a
slot may receive a 64 KiB UDP GRO run), a control buffer per slot for the
``UDP_GRO`` segment size, and a name buffer per slot for the source.

One :meth:`MmsgReceiver.receive` restores every header from a template (one
``memmove``: the kernel overwrote the lengths), calls ``recvmmsg`` with
``MSG_DONTWAIT`` and decodes the filled slots: the data copied out as
``bytes``, the GRO segment size (0 if none), the source as ``(host, port)``
from a small cache keyed by the raw sockaddr. Linux only; :func:`available`
says whether libc has it, and the socket keeps its ``recvmsg`` loop otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import socket as _socket
import struct
import sys

SOL_UDP = 17
UDP_GRO = 104
RECV_SIZE = 65536  # one slot: a whole UDP GRO run fits
NAME_SIZE = 28  # sizeof(struct sockaddr_in6), which also holds a sockaddr_in
CONTROL_SIZE = _socket.CMSG_SPACE(4)  # one cmsg: UDP_GRO's int segment size
MSG_DONTWAIT = 0x40
ENDPOINT_CACHE = 1024  # distinct raw source addresses kept decoded; cleared when full


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_HDR_SIZE = ctypes.sizeof(_Mmsghdr)
_OFF_NAMELEN = _Msghdr.msg_namelen.offset
_OFF_CONTROLLEN = _Msghdr.msg_controllen.offset
_OFF_LEN = _Mmsghdr.msg_len.offset
_FIELDS = struct.Struct(  # one struct mmsghdr -> (msg_namelen, msg_controllen, msg_len), the fields read back
    f"@{_OFF_NAMELEN}xI{_OFF_CONTROLLEN - _OFF_NAMELEN - 4}xN"
    f"{_OFF_LEN - _OFF_CONTROLLEN - ctypes.sizeof(ctypes.c_size_t)}xI{_HDR_SIZE - _OFF_LEN - 4}x"
)
_CMSG = struct.Struct("@Nii")  # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type; then the data
_I32 = struct.Struct("=i")


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether this platform's libc has ``recvmmsg`` (Linux glibc and musl do)."""
    return _LIBC is not None


Received = tuple[bytes, int, tuple[str, int]]
"""(data, UDP GRO segment size or 0, source (host, port)): what the socket's receive loop handles."""


class MmsgReceiver:
    """Preallocated ``recvmmsg`` buffers for one socket; see the module doc."""

    def __init__(self, slots: int, unmap: bool = False) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available from libc here")
        if not 1 <= slots <= 1024:
            raise ValueError("slots must be within 1..1024")
        self.slots = slots
        self.unmap = unmap
        self._recvmmsg = _LIBC.recvmmsg
        # Anonymous mappings: pages become resident only where the kernel writes (a 1400-byte datagram
        # touches one page of its 64 KiB slot).
        self._data = mmap.mmap(-1, slots * RECV_SIZE)
        self._meta = mmap.mmap(-1, slots * (NAME_SIZE + CONTROL_SIZE))
        data_base = ctypes.addressof(ctypes.c_char.from_buffer(self._data))
        meta_base = ctypes.addressof(ctypes.c_char.from_buffer(self._meta))
        self._iovs = (_Iovec * slots)()
        self._hdrs = (_Mmsghdr * slots)()
        for i in range(slots):
            self._iovs[i].iov_base = data_base + i * RECV_SIZE
            self._iovs[i].iov_len = RECV_SIZE
            hdr = self._hdrs[i].msg_hdr
            hdr.msg_name = meta_base + i * NAME_SIZE
            hdr.msg_namelen = NAME_SIZE
            hdr.msg_iov = ctypes.addressof(self._iovs[i])
            hdr.msg_iovlen = 1
            hdr.msg_control = meta_base + slots * NAME_SIZE + i * CONTROL_SIZE
            hdr.msg_controllen = CONTROL_SIZE
        self._hdrs_addr = ctypes.addressof(self._hdrs)
        self._template = bytes(self._hdrs)  # the headers as the kernel must find them before each call
        self._view = memoryview(self._hdrs).cast("B")
        self._endpoints: dict[bytes, tuple[str, int]] = {}
        self.bad_sources = 0  # datagrams skipped because their source was no IPv4/IPv6 address
        self.per_slot = 1  # datagrams per filled slot in the last call (GRO runs: more); the caller's sizing

    def close(self) -> None:
        """Release the buffers; :meth:`receive` must not be called after this."""
        self._view.release()
        self._data.close()
        self._meta.close()

    def receive(self, fd: int, out: list[Received], limit: int | None = None) -> int:
        """One ``recvmmsg`` without blocking, for at most ``limit`` (default: every slot) datagrams; what it
        brought is appended to ``out``. Returns how many slots were filled: 0 when none waited.

        OSError for a failed call other than EAGAIN (e.g. ECONNREFUSED from an earlier send's ICMP error)."""
        n = self.slots if limit is None else max(1, min(limit, self.slots))
        ctypes.memmove(self._hdrs_addr, self._template, n * _HDR_SIZE)
        got = self._recvmmsg(fd, self._hdrs_addr, n, MSG_DONTWAIT, None)
        if got < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        data, meta, endpoints = self._data, self._meta, self._endpoints
        controls = self.slots * NAME_SIZE
        fields = _FIELDS.iter_unpack(self._view[: got * _HDR_SIZE])
        for i, (namelen, controllen, length) in enumerate(fields):
            offset = i * RECV_SIZE
            segment = 0
            if controllen >= _CMSG.size + 2:
                at = controls + i * CONTROL_SIZE
                _len, level, kind = _CMSG.unpack_from(meta, at)
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = _I32.unpack_from(meta, at + _CMSG.size)[0]
            at = i * NAME_SIZE
            raw = meta[at : at + min(namelen, NAME_SIZE)]
            source = endpoints.get(raw)
            if source is None:
                try:
                    source = decode_sockaddr(raw, self.unmap)
                except ValueError:
                    self.bad_sources += 1  # not an IP source: nothing could answer it
                    continue
                if len(endpoints) >= ENDPOINT_CACHE:
                    endpoints.clear()
                endpoints[raw] = source
            out.append((data[offset : offset + min(length, RECV_SIZE)], segment, source))
        return got


def decode_sockaddr(raw: bytes, unmap: bool = False) -> tuple[str, int]:
    """(host, port) of a raw ``sockaddr_in`` / ``sockaddr_in6``, as Python's ``recvmsg`` names it (an IPv6
    scope as ``%name``); ``unmap``: ``::ffff:a.b.c.d`` becomes ``a.b.c.d``. ValueError for anything else."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr of {len(raw)} bytes")
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == _socket.AF_INET:
        return _socket.inet_ntop(_socket.AF_INET, raw[4:8]), port
    if family == _socket.AF_INET6 and len(raw) >= 24:
        host = _socket.inet_ntop(_socket.AF_INET6, raw[8:24])
        if unmap and host.startswith("::ffff:") and "." in host:
            return host[7:], port
        scope = int.from_bytes(raw[24:28], sys.byteorder) if len(raw) >= 28 else 0
        if scope:
            try:
                host = f"{host}%{_socket.if_indextoname(scope)}"
            except OSError:
                host = f"{host}%{scope}"
        return host, port
    raise ValueError(f"sockaddr family {family}")
