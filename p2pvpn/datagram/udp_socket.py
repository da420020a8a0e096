"""The node's UDP socket for the datagram path (docs/protocol.md §16.8): I/O only.

One socket per node, shared by every tunnel. Incoming datagrams are
demultiplexed by receiver_index to the (session, epoch) that registered it;
everything protocol-shaped happens in the sans-IO session
(p2pvpn.datagram.session). Linux offloads cut the per-datagram syscall cost:

* send: a run of same-size datagrams to one endpoint goes out in ONE
  ``sendmsg`` with ``UDP_SEGMENT`` (GSO; the last one may be shorter);
* receive: ``UDP_GRO`` lets one ``recvmsg`` return up to 64 KiB of
  coalesced datagrams from one source, their size in a cmsg; and one
  ``recvmmsg`` (p2pvpn.datagram.mmsg, ctypes) takes a whole batch of such
  receives, for links whose datagrams arrive one by one.

Both fall back to one datagram per syscall where the kernel refuses.

The socket is a plain non-blocking one, not a trio socket: trio's socket
methods end every successful call with a scheduler pass (a checkpoint),
and on this data path each pass is a measurable share of the added RTT
(docs/performance.md, "Latency budget"). So a send is a direct syscall
(trio waits only when the buffer is full), and a receive drains what the
kernel holds, up to RECV_BATCH datagrams, before any of it is handled:
through a link without GRO (the WAN emulator, many NICs under loss) every
recvmsg brings one datagram, and a batch is what lets the tunnel coalesce
them into 64 KiB TUN writes again (p2pvpn.dataplane.gro). The receive loop
yields between batches while the socket stays busy, so the TUN reader and
the send loops keep their turn.

A datagram is opened and written to the TUN in the wake-up that read it
(no queue, no task switch in between); ``after_delivery`` then takes what
the kernel answered inside those writes from the TUN in that wake-up too
(p2pvpn.dataplane.egress, step 1').
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket as _socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from p2pvpn.datagram import mmsg
from p2pvpn.datagram.epochs import Epoch
from p2pvpn.datagram.packet import MIN_DATAGRAM_LEN
from p2pvpn.datagram.path import Endpoint
from p2pvpn.datagram.session import Batch, DatagramSession, Drop

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64      # the smallest UDP_MAX_SEGMENTS of the kernels we run on
GSO_MAX_BYTES = 65000      # payload bytes of one GSO send (an IP datagram is at most 64 KiB)
RECV_SIZE = 65536
RECV_BATCH = 96            # datagrams per drained batch: more than one 64 KiB TUN record's worth (46)
RECV_BATCH_CALLS = 64      # recvmsg calls per batch, whatever they bring
RECV_MMSG_SLOTS = 32       # datagrams (or GRO runs) per recvmmsg; 2 MiB of slots, resident only where written
RECV_MMSG_CALLS = 8        # recvmmsg calls per batch
RECVMMSG = False
"""Receive with recvmmsg where libc has it, while datagrams arrive one by one (GRO runs keep one recvmsg per
run, which costs no more). Off: no same-run A/B has shown it paying in both profiles (5 runs each, load 8-23:
`low` 0.81x, clean 0.89x median; docs/performance.md, "Added RTT and recvmmsg, round 2");
bench/throughput.py --switch-baseline recvmmsg measures both."""
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
        self.dual = False  # one IPv6 socket that also carries IPv4 (open() on an unspecified host)
        self.buffers: dict[str, int] = {}  # socket buffer bytes the kernel granted (status)
        self.sends = 0  # sendmsg calls, for the benchmark's per-syscall numbers
        self._sock: _socket.socket | None = None
        self._table: dict[int, _Binding] = {}
        self._reserved: set[int] = set()
        self._pending: dict[int, DatagramSession] = {}  # our offered, not yet installed indices (the hold, §16.6)
        self.batches = 0  # drained batches handled, and the datagrams in them: the receive side's batch size
        self.batched = 0
        self.held = 0  # datagrams held for a pending index (opened later, or counted udp_unknown_index)
        self.receiver: mmsg.MmsgReceiver | None = None  # recvmmsg buffers (None: one recvmsg per datagram)
        self.after_delivery: Callable[[int], None] | None = None
        """Called once after a drained batch delivered packets (with how many): the node reads what the kernel
        answered inside those TUN writes (p2pvpn.dataplane.egress.route_ready), in the same wake-up."""

    # -- setup -------------------------------------------------------------

    async def open(self) -> None:
        """Bind to ``wanted_port`` if free, else an ephemeral port.

        An unspecified host (``0.0.0.0`` or ``::``) gets one dual-stack IPv6
        socket (``IPV6_V6ONLY`` off), so the path works between IPv4 and
        between IPv6 underlay addresses alike; IPv4 peers appear as plain
        IPv4 endpoints above this class (mapped ``::ffff:`` only on the wire
        to the kernel). Without IPv6 in the kernel: an IPv4 socket.
        """
        sock: _socket.socket | None = None
        if self.host in ("0.0.0.0", "::"):
            try:
                sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM)
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
                self.dual = True
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
                self.dual = False
        if sock is None:
            family = _socket.AF_INET6 if ":" in self.host else _socket.AF_INET
            sock = _socket.socket(family, _socket.SOCK_DGRAM)
        host = "::" if self.dual else self.host
        try:
            sock.setblocking(False)
            try:
                sock.bind((host, self.wanted_port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or self.wanted_port == 0:
                    raise
                log.info("UDP port %d is taken; the datagram path uses an ephemeral port", self.wanted_port)
                sock.bind((host, 0))
            self.buffers = _grow_buffers(sock)
        except BaseException:
            sock.close()
            raise
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        self.port = sock.getsockname()[1]
        self._sock = sock
        if RECVMMSG and mmsg.available():
            self.receiver = mmsg.MmsgReceiver(RECV_MMSG_SLOTS, unmap=self.dual)
        await trio.lowlevel.checkpoint()

    def accepts(self, host: str) -> bool:
        """Can this socket reach an endpoint with this IP (IPv6 if it has a colon)?"""
        if self.dual:
            return True
        return (":" in host) == (":" in self.host)

    def close(self) -> None:
        if self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)  # wakes a receive loop still waiting on it
            self._sock.close()
            self._sock = None
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None

    # -- the receiver_index table -------------------------------------------

    def allocate_index(self) -> int:
        """A random non-zero receiver_index no tunnel of ours uses (reserved until registered or released)."""
        while True:
            index = secrets.randbits(32)
            if index and index not in self._table and index not in self._reserved:
                self._reserved.add(index)
                return index

    def pending(self, index: int, session: DatagramSession) -> None:
        """``index`` is in an offer we sent: hold what carries it until the epoch is installed."""
        self._pending[index] = session

    def register(self, session: DatagramSession, epoch: Epoch, deliver: Deliver, now: float | None = None) -> None:
        """Demultiplex ``epoch.recv_index`` to this session; then open what the session held for it."""
        self._reserved.discard(epoch.recv_index)
        self._pending.pop(epoch.recv_index, None)
        self._table[epoch.recv_index] = _Binding(session, epoch, deliver)
        if now is not None:
            held, stale = session.take_held(now)
            self.drops[Drop.UNKNOWN_INDEX] += stale
            if held:
                self._handle([(d, 0, source) for d, source in held], now)

    def release(self, index: int) -> None:
        self._table.pop(index, None)
        self._reserved.discard(index)
        self._pending.pop(index, None)

    # -- sending --------------------------------------------------------------

    async def send(self, endpoint: Endpoint, datagrams: list[bytes]) -> None:
        """Send ``datagrams`` in order to ``endpoint``: runs of equal size as one GSO sendmsg each.

        No scheduler pass unless the socket buffer is full (then trio waits until writable)."""
        sock = self._sock
        if sock is None:
            return
        endpoint = self._to(endpoint)
        for run, size in _runs(datagrams):
            for _ in range(FULL_BUFFER_WAITS):
                if self._send_run(sock, endpoint, run, size):
                    break
                await trio.lowlevel.wait_writable(sock)
            else:
                self.drops["udp_send_eagain"] += len(run)

    def send_now(self, endpoint: Endpoint, datagrams: list[bytes]) -> int:
        """Send ``datagrams`` in order to ``endpoint`` without waiting: how many went (a prefix of them).

        For the TUN reader's direct send (p2pvpn.dataplane.egress, step 3'),
        which must never wait: it stops at a full buffer, or at any error,
        and counts nothing; the caller queues the rest for the send loop,
        whose :meth:`send` waits for room and counts what fails."""
        sock = self._sock
        if sock is None:
            return 0
        endpoint = self._to(endpoint)
        sent = 0
        try:
            for run, size in _runs(datagrams):
                if len(run) > 1 and self.gso:
                    sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, endpoint)
                    self.sends += 1
                    sent += len(run)
                    continue
                for datagram in run:
                    sock.sendto(datagram, endpoint)
                    self.sends += 1
                    sent += 1
        except OSError:  # BlockingIOError (a full buffer) included: the send loop takes the rest
            pass
        return sent

    def _to(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` as the socket takes it: IPv4 through the dual-stack socket is ``::ffff:``-mapped."""
        if self.dual and ":" not in endpoint[0]:
            return ("::ffff:" + endpoint[0], endpoint[1])
        return endpoint

    def _send_run(self, sock: _socket.socket, endpoint: Endpoint, run: list[bytes], size: int) -> bool:
        """One run (GSO if possible); False if the buffer is full and nothing was sent."""
        try:
            if len(run) > 1 and self.gso:
                try:
                    sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, endpoint)
                    self.sends += 1
                    return True
                except BlockingIOError:
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                        raise
                    if exc.errno != errno.EINVAL:
                        self.gso = False  # the kernel or device has no UDP GSO: one datagram per send from now on
            for k, datagram in enumerate(run):
                try:
                    sock.sendto(datagram, endpoint)
                except BlockingIOError:
                    if k == 0:
                        return False
                    self.drops["udp_send_eagain"] += len(run) - k  # a partial run is not resent (no duplicates)
                    return True
                self.sends += 1
        except OSError as exc:
            # The path is unreachable or the buffer is full: like a lost packet. The path's
            # timeout, not an error here, moves the tunnel back to the stream.
            self.drops[f"udp_send_{errno.errorcode.get(exc.errno or 0, 'error').lower()}"] += len(run)
        return True

    # -- receiving -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until cancelled: drain a batch, split GRO runs, demultiplex, hand to the sessions."""
        sock = self._sock
        assert sock is not None, "open() first"
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                receiver = self.receiver
                if receiver is not None and receiver.per_slot == 1:  # datagrams come one by one: batch the calls
                    received, more = _drain_mmsg(sock, receiver)
                else:  # GRO runs (or no recvmmsg): a recvmsg per run costs no more
                    received, more = _drain(sock, self.dual)
                    if receiver is not None and received:
                        receiver.per_slot = max(1, _datagrams(received) // len(received))
                delivered = self._handle(received, trio.current_time()) if received else 0
                if delivered and self.after_delivery is not None:
                    self.after_delivery(delivered)
                if not more:
                    break
                await trio.lowlevel.checkpoint()  # the socket is still busy: let the other tasks run first

    def _handle(self, received: list[tuple[bytes, int, Endpoint]], now: float) -> int:
        """Split, demultiplex and open one drained batch; deliver its data packets per tunnel, once.

        Returns how many data packets were delivered."""
        drops = self.drops
        table = self._table
        groups: dict[tuple[int, Endpoint], list[bytes | memoryview]] = {}
        batched = 0
        for data, segment, source in received:
            datagrams = split(data, segment) if segment else (data,)
            batched += len(datagrams)
            for datagram in datagrams:
                if len(datagram) < MIN_DATAGRAM_LEN or not 1 <= datagram[0] <= 3:
                    drops[Drop.SHORT] += 1
                    continue
                index = int.from_bytes(datagram[1:5], "big")
                if index not in table:
                    session = self._pending.get(index)
                    if session is not None and session.hold(index, datagram, source, now):
                        self.held += 1
                    else:
                        drops[Drop.UNKNOWN_INDEX] += 1
                    continue
                key = (index, source)
                group = groups.get(key)
                if group is None:
                    groups[key] = [datagram]
                else:
                    group.append(datagram)
        self.batches += 1
        self.batched += batched
        delivered: dict[int, tuple[Deliver, list[bytes]]] = {}
        for (index, source), datagrams in groups.items():
            binding = table[index]
            entry = delivered.get(id(binding.deliver))
            if entry is None:
                entry = delivered[id(binding.deliver)] = (binding.deliver, [])
            out = Batch(packets=entry[1], drops=drops)
            binding.session.receive_batch(binding.epoch, datagrams, source, now, out)
            for reply in out.replies:
                if self._sock is not None:  # a full buffer loses it, like the network
                    to = ("::ffff:" + source[0], source[1]) if self.dual and ":" not in source[0] else source
                    self._send_run(self._sock, to, [reply], len(reply))
        count = 0
        for deliver, packets in delivered.values():
            if packets:
                deliver(packets)
                count += len(packets)
        return count

    def describe(self) -> dict[str, object]:
        return {"port": self.port, "dual_stack": self.dual, "gso": self.gso, "gro": self.gro, **self.buffers,
                "udp_held": self.held, "udp_rx_batches": self.batches, "udp_rx_batched": self.batched,
                "recvmmsg": self.receiver is not None,
                "udp_rx_bad_source": self.receiver.bad_sources if self.receiver is not None else 0,
                **{k: self.drops.get(k, 0) for k in (
            Drop.BAD_AUTH, Drop.REPLAYED, Drop.UNKNOWN_INDEX, Drop.SHORT, Drop.MALFORMED)},
            **{k: v for k, v in self.drops.items() if k.startswith("udp_send_")}}


FULL_BUFFER_WAITS = 1000
"""Waits for a writable socket per run before its datagrams count as dropped (``udp_send_eagain``)."""


def _runs(datagrams: list[bytes]) -> Iterator[tuple[list[bytes], int]]:
    """``datagrams`` in order, as runs one GSO ``sendmsg`` can carry: equal sizes (the last may be shorter), each
    run with its segment size."""
    i, n = 0, len(datagrams)
    while i < n:
        size = len(datagrams[i])
        j = i + 1
        limit = min(n, i + GSO_MAX_SEGMENTS, i + max(1, GSO_MAX_BYTES // size))
        while j < limit and len(datagrams[j]) == size:
            j += 1
        if j < n and j < limit and len(datagrams[j]) < size:
            j += 1  # GSO allows a shorter last segment
        yield datagrams[i:j], size
        i = j


def split(data: bytes, segment: int) -> list[bytes | memoryview]:
    """The datagrams of one receive: ``data`` cut every ``segment`` bytes (UDP GRO), or whole."""
    if segment <= 0 or segment >= len(data):
        return [data]
    view = memoryview(data)
    return [view[offset : offset + segment] for offset in range(0, len(data), segment)]


def _drain(sock: _socket.socket, unmap: bool = False) -> tuple[list[tuple[bytes, int, Endpoint]], bool]:
    """What the socket holds now, up to RECV_BATCH datagrams: (data, GRO segment size or 0, source) each,
    and whether more may be waiting (the batch ended on its bound, not on an empty socket).
    ``unmap``: a dual-stack socket; IPv4 sources come as ``::ffff:a.b.c.d`` and leave as ``a.b.c.d``."""
    out: list[tuple[bytes, int, Endpoint]] = []
    count = 0
    for _ in range(RECV_BATCH_CALLS):
        try:
            data, ancdata, _flags, address = sock.recvmsg(RECV_SIZE, _CMSG_SPACE)
        except BlockingIOError:
            return out, False
        except OSError as exc:  # e.g. ECONNREFUSED from an earlier send's ICMP: not fatal
            log.debug("UDP receive: %r", exc)
            continue
        segment = 0
        for level, kind, value in ancdata:
            if level == SOL_UDP and kind == UDP_GRO:
                segment = _I32.unpack(value[:4])[0] if len(value) >= 4 else _U16.unpack(value[:2])[0]
        host = address[0]
        if unmap and host.startswith("::ffff:") and "." in host:
            host = host[7:]
        out.append((data, segment, (host, address[1])))
        count += len(data) // segment if 0 < segment < len(data) else 1
        if count >= RECV_BATCH:
            break
    return out, True


def _datagrams(received: list[tuple[bytes, int, Endpoint]]) -> int:
    """How many datagrams the receives brought (a GRO run counts each of its segments)."""
    return sum(-(-len(data) // segment) if 0 < segment < len(data) else 1 for data, segment, _ in received)


def _drain_mmsg(sock: _socket.socket, receiver: mmsg.MmsgReceiver) -> tuple[list[tuple[bytes, int, Endpoint]], bool]:
    """:func:`_drain` with ``recvmmsg``: up to about RECV_BATCH datagrams in at most RECV_MMSG_CALLS calls.

    A slot holds one datagram or a GRO run of up to 46: each call asks for as many slots as the batch has
    room for at the previous call's datagrams per slot, so GRO runs keep the batch near RECV_BATCH too."""
    out: list[tuple[bytes, int, Endpoint]] = []
    count = 0
    fd = sock.fileno()
    for _ in range(RECV_MMSG_CALLS):
        start = len(out)
        want = max(1, min(receiver.slots, (RECV_BATCH - count) // receiver.per_slot))
        try:
            got = receiver.receive(fd, out, want)
        except OSError as exc:  # e.g. ECONNREFUSED from an earlier send's ICMP: not fatal
            log.debug("UDP receive: %r", exc)
            continue
        if got == 0:
            return out, False
        datagrams = _datagrams(out[start:])
        receiver.per_slot = max(1, datagrams // got)
        count += datagrams
        if got < want:
            return out, False  # the queue ran dry inside this call
        if count >= RECV_BATCH:
            break
    return out, True


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


def _grow_buffers(sock: _socket.socket) -> dict[str, int]:
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
