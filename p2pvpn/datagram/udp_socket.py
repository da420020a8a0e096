"""The node's UDP socket for the datagram path (docs/protocol.md §16.8): I/O only.

One socket per node, shared by every tunnel. Incoming datagrams are
demultiplexed by receiver_index to the (session, epoch) that registered it;
everything protocol-shaped happens in the sans-IO session
(p2pvpn.datagram.session). Linux offloads cut the per-datagram syscall cost:

* send: a run of same-size datagrams to one endpoint goes out in ONE
  ``sendmsg`` with ``UDP_SEGMENT`` (GSO; the last one may be shorter);
* receive: ``UDP_GRO`` lets one ``recvmsg`` return up to 64 KiB of
  coalesced datagrams from one source, their size in a cmsg.

Both fall back to one datagram per syscall where the kernel refuses.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket as _socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import trio

from p2pvpn.datagram.epochs import Epoch
from p2pvpn.datagram.packet import HEADER, MIN_DATAGRAM_LEN
from p2pvpn.datagram.path import Endpoint
from p2pvpn.datagram.session import DatagramSession, Drop

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64      # the smallest UDP_MAX_SEGMENTS of the kernels we run on
GSO_MAX_BYTES = 65000      # payload bytes of one GSO send (an IP datagram is at most 64 KiB)
RECV_SIZE = 65536
_CMSG_SPACE = _socket.CMSG_SPACE(4)
_U16 = struct.Struct("=H")
_I32 = struct.Struct("=i")

Deliver = Callable[[list[bytes]], None]
"""Takes the data packets one receive produced for a tunnel (ingress checks, then the TUN)."""


@dataclass(slots=True)
class _Binding:
    session: DatagramSession
    epoch: Epoch
    deliver: Deliver


class DatagramSocket:
    """A bound UDP socket plus the receiver_index table. ``open`` binds; ``run`` receives until cancelled."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0) -> None:
        self.host = host
        self.wanted_port = port
        self.port = 0
        self.drops: Counter[str] = Counter()
        self.gso = True
        self.gro = False
        self.buffers: dict[str, int] = {}  # socket buffer bytes the kernel granted (status)
        self.sends = 0  # sendmsg calls, for the benchmark's per-syscall numbers
        self._sock: trio.socket.SocketType | None = None
        self._table: dict[int, _Binding] = {}
        self._reserved: set[int] = set()

    # -- setup -------------------------------------------------------------

    async def open(self) -> None:
        """Bind to ``wanted_port`` if free, else an ephemeral port."""
        family = _socket.AF_INET6 if ":" in self.host else _socket.AF_INET
        sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
        try:
            await sock.bind((self.host, self.wanted_port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.wanted_port == 0:
                sock.close()
                raise
            log.info("UDP port %d is taken; the datagram path uses an ephemeral port", self.wanted_port)
            await sock.bind((self.host, 0))
        self.buffers = _grow_buffers(sock)
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        self.port = sock.getsockname()[1]
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- the receiver_index table -------------------------------------------

    def allocate_index(self) -> int:
        """A random non-zero receiver_index no tunnel of ours uses (reserved until registered or released)."""
        while True:
            index = secrets.randbits(32)
            if index and index not in self._table and index not in self._reserved:
                self._reserved.add(index)
                return index

    def register(self, session: DatagramSession, epoch: Epoch, deliver: Deliver) -> None:
        self._reserved.discard(epoch.recv_index)
        self._table[epoch.recv_index] = _Binding(session, epoch, deliver)

    def release(self, index: int) -> None:
        self._table.pop(index, None)
        self._reserved.discard(index)

    # -- sending --------------------------------------------------------------

    async def send(self, endpoint: Endpoint, datagrams: list[bytes]) -> None:
        """Send ``datagrams`` in order to ``endpoint``: runs of equal size as one GSO sendmsg each."""
        sock = self._sock
        if sock is None:
            return
        i, n = 0, len(datagrams)
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            limit = min(n, i + GSO_MAX_SEGMENTS, i + max(1, GSO_MAX_BYTES // size))
            while j < limit and len(datagrams[j]) == size:
                j += 1
            if j < n and j < limit and len(datagrams[j]) < size:
                j += 1  # GSO allows a shorter last segment
            await self._send_run(sock, endpoint, datagrams[i:j], size)
            i = j

    async def _send_run(self, sock: trio.socket.SocketType, endpoint: Endpoint, run: list[bytes], size: int) -> None:
        try:
            if len(run) > 1 and self.gso:
                try:
                    await sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, endpoint)
                    self.sends += 1
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                        raise
                    if exc.errno != errno.EINVAL:
                        self.gso = False  # the kernel or device has no UDP GSO: one datagram per send from now on
            for datagram in run:
                await sock.sendto(datagram, endpoint)
                self.sends += 1
        except OSError as exc:
            # The path is unreachable or the buffer is full: like a lost packet. The path's
            # timeout, not an error here, moves the tunnel back to the stream.
            self.drops[f"udp_send_{errno.errorcode.get(exc.errno or 0, 'error').lower()}"] += len(run)

    # -- receiving -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until cancelled: split GRO runs, demultiplex, hand to the sessions."""
        sock = self._sock
        assert sock is not None, "open() first"
        task_status.started()
        drops = self.drops
        table = self._table
        unpack_header = HEADER.unpack_from
        while True:
            try:
                data, ancdata, _flags, address = await sock.recvmsg(RECV_SIZE, _CMSG_SPACE)
            except OSError as exc:  # e.g. ECONNREFUSED from an earlier send's ICMP: not fatal
                log.debug("UDP receive: %r", exc)
                continue
            source: Endpoint = (address[0], address[1])
            segment = len(data)
            for level, kind, value in ancdata:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = _I32.unpack(value[:4])[0] if len(value) >= 4 else _U16.unpack(value[:2])[0]
            now = trio.current_time()
            delivered: dict[int, tuple[Deliver, list[bytes]]] = {}
            view = memoryview(data)
            for offset in range(0, len(data), segment or len(data) or 1):
                datagram = view[offset : offset + segment] if segment < len(data) else data
                if len(datagram) < MIN_DATAGRAM_LEN or not 1 <= datagram[0] <= 3:
                    drops[Drop.SHORT] += 1
                    continue
                index = unpack_header(datagram)[1]
                binding = table.get(index)
                if binding is None:
                    drops[Drop.UNKNOWN_INDEX] += 1
                    continue
                result = binding.session.receive(binding.epoch, datagram, source, now)
                if result.packet is not None:
                    entry = delivered.get(id(binding.deliver))
                    if entry is None:
                        delivered[id(binding.deliver)] = (binding.deliver, [result.packet])
                    else:
                        entry[1].append(result.packet)
                elif result.reply is not None:
                    await self._send_run(sock, source, [result.reply], len(result.reply))
                elif result.drop is not None:
                    drops[result.drop] += 1
            for deliver, packets in delivered.values():
                deliver(packets)

    def describe(self) -> dict[str, object]:
        return {"port": self.port, "gso": self.gso, "gro": self.gro, **self.buffers, **{k: self.drops.get(k, 0) for k in (
            Drop.BAD_AUTH, Drop.REPLAYED, Drop.UNKNOWN_INDEX, Drop.SHORT, Drop.MALFORMED)},
            **{k: v for k, v in self.drops.items() if k.startswith("udp_send_")}}


def bind_target(listen: list[str] | tuple[str, ...]) -> tuple[str, int]:
    """(address, port) for the node's UDP socket, from its libp2p listen addresses (§16.8).

    The first TCP listen address gives both, unless a QUIC listener already
    uses that UDP port (then an ephemeral one); no TCP listener: any address,
    an ephemeral port.
    """
    quic_ports = set()
    tcp: tuple[str, int] | None = None
    for addr in listen:
        parts = addr.strip("/").split("/")
        if len(parts) >= 4 and parts[0] in ("ip4", "ip6"):
            if parts[2] == "udp":
                quic_ports.add(int(parts[3]))
            elif parts[2] == "tcp" and tcp is None:
                tcp = (parts[1], int(parts[3]))
    if tcp is None:
        return "0.0.0.0", 0
    host, port = tcp
    return host, (0 if port in quic_ports else port)


BUFFER_BYTES = 4 << 20
"""Socket buffers of the datagram path: a burst of GSO/GRO batches must not overflow the kernel's
default (net.core.rmem_max, 208 KiB), whose drops the inner TCP reads as congestion."""


def _grow_buffers(sock: trio.socket.SocketType) -> dict[str, int]:
    """Ask for BUFFER_BYTES each way; the *FORCE options (CAP_NET_ADMIN, which a node has for its TUN) pass
    rmem_max/wmem_max. Returns what the kernel granted (it doubles the request for bookkeeping)."""
    granted = {}
    for name, force, plain in (("rcvbuf", getattr(_socket, "SO_RCVBUFFORCE", 33), _socket.SO_RCVBUF),
                               ("sndbuf", getattr(_socket, "SO_SNDBUFFORCE", 32), _socket.SO_SNDBUF)):
        for option in (force, plain):
            try:
                sock.setsockopt(_socket.SOL_SOCKET, option, BUFFER_BYTES)
                break
            except OSError:
                continue  # no CAP_NET_ADMIN: the plain option, capped by the sysctl
        granted[name] = sock.getsockopt(_socket.SOL_SOCKET, plain)
    return granted
