"""One tunnel's datagram path, sans-IO: keys + path + the receive ladder (docs/protocol.md §16).

The socket layer (p2pvpn.datagram.udp_socket) demultiplexes datagrams by
their receiver_index to a (session, epoch) pair and calls
:meth:`receive_batch` once per batch of a receive (:meth:`receive` is the
same ladder for one datagram); the
tunnel calls :meth:`seal_packets` for data, :meth:`due_probes` on its timer,
and feeds the peer's offers to :attr:`keys`. Nothing here does I/O.

Receive ladder, each rung a named drop counted by the caller:
header (``udp_short``) -> receiver_index (``udp_unknown_index``, caller) ->
replay window pre-check (``udp_replayed``) -> AES-GCM tag (``udp_bad_auth``)
-> plaintext length (``udp_malformed``) -> replay window update -> deliver.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from p2pvpn.datagram.epochs import Epoch, KeySchedule
from p2pvpn.datagram.packet import HEADER_LEN, PROBE_ID_LEN, Kind, seal, seal_many
from p2pvpn.datagram.path import Endpoint, Path, PathState


class Drop:
    SHORT = "udp_short"
    UNKNOWN_INDEX = "udp_unknown_index"
    BAD_AUTH = "udp_bad_auth"
    REPLAYED = "udp_replayed"
    MALFORMED = "udp_malformed"


@dataclass(frozen=True, slots=True)
class Received:
    """Outcome of one datagram: a data packet to deliver, a reply to send back, or a drop reason."""

    packet: bytes | None = None
    reply: bytes | None = None
    drop: str | None = None


@dataclass(slots=True)
class Batch:
    """Outcome of a batch of datagrams: data packets in arrival order, replies to send, drops by reason."""

    packets: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)


HOLD_MAX = 256
HOLD_MAX_BYTES = 1 << 20  # unauthenticated until the keys come: bounded in bytes too
HOLD_TIME = 1.0
"""Datagrams for our pending offer's receiver_index are kept at most this long (seconds), this many (§16.6)."""


class DatagramSession:
    def __init__(self, keys: KeySchedule) -> None:
        self.keys = keys
        self.path = Path()
        self.tx_packets = 0
        self.rx_packets = 0
        self.on_probe_reply: Callable[[bytes], None] | None = None  # told each authenticated reply's probe id
        self._held: list[tuple[bytes, Endpoint, float]] = []
        self._held_bytes = 0

    def hold(self, index: int, datagram: bytes | memoryview, source: Endpoint, now: float) -> bool:
        """Keep a datagram that carries our pending offer's receiver_index until that epoch is installed.

        At a rekey the responder installs the new epoch, and seals with it, as
        soon as it has our offer; its own offer comes back on the stream and
        may arrive after its first datagrams. Held (bounded) they are opened
        once the epoch is installed (:meth:`take_held`) instead of being lost.
        False: not our pending index, or the hold is full (the caller drops it).
        """
        if index != self.keys.pending_index or len(self._held) >= HOLD_MAX \
                or self._held_bytes + len(datagram) > HOLD_MAX_BYTES:  # fmt: skip
            return False
        self._held.append((bytes(datagram), source, now))
        self._held_bytes += len(datagram)
        return True

    def take_held(self, now: float) -> tuple[list[tuple[bytes, Endpoint]], int]:
        """The held datagrams, in arrival order, and how many were older than HOLD_TIME (dropped). Empties the hold."""
        fresh = [(d, source) for d, source, at in self._held if now - at <= HOLD_TIME]
        stale = len(self._held) - len(fresh)
        self._held.clear()
        self._held_bytes = 0
        return fresh, stale

    @property
    def usable(self) -> bool:
        """Data may go over UDP now: path ``udp`` and a current epoch with counters left."""
        current = self.keys.current
        return self.path.state is PathState.UDP and current is not None and current.send_counter < _SEND_LIMIT

    def seal_packets(self, packets: list[bytes], now: float) -> list[bytes]:
        """Data datagrams for ``packets`` with the current epoch (caller checked ``usable``)."""
        epoch = self.keys.current
        assert epoch is not None
        aead, index = epoch.send_aead, epoch.send_index
        counter = epoch.send_counter
        out = seal_many(aead, Kind.DATA, index, counter, packets)
        epoch.send_counter = counter + len(packets)
        self.tx_packets += len(packets)
        self.path.on_sent(now)
        return out

    def probe(self, kind: int = Kind.PROBE, probe_id: bytes | None = None) -> bytes | None:
        """A probe (or reply) datagram with the current epoch; None without keys."""
        epoch = self.keys.current
        if epoch is None:
            return None
        counter = epoch.next_counter()
        if counter is None:
            return None
        return seal(epoch.send_aead, kind, epoch.send_index, counter, probe_id or os.urandom(8))

    def due_probes(self, now: float) -> list[tuple[Endpoint, bytes]]:
        """Probes the path wants sent now, sealed (empty until epoch 1 is installed)."""
        if self.keys.current is None:
            return []
        out: list[tuple[Endpoint, bytes]] = []
        for endpoint in self.path.poll(now):
            datagram = self.probe()
            if datagram is not None:
                out.append((endpoint, datagram))
        if out and self.path.state is PathState.UDP:
            self.path.on_sent(now)
        return out

    def receive(self, epoch: Epoch, datagram: bytes | memoryview, source: Endpoint, now: float) -> Received:
        """The ladder for one datagram already matched to ``epoch`` by its receiver_index."""
        out = self.receive_batch(epoch, (datagram,), source, now)
        if out.packets:
            return Received(packet=out.packets[0])
        if out.replies:
            return Received(reply=out.replies[0])
        if out.drops:
            return Received(drop=next(iter(out.drops)))
        return Received()

    def receive_batch(self, epoch: Epoch, datagrams: Sequence[bytes | memoryview], source: Endpoint, now: float,
                      out: Batch | None = None) -> Batch:  # fmt: skip
        """The ladder for datagrams of one source already matched to ``epoch``, in arrival order.

        The same rungs as one datagram at a time, but the path hears of the
        batch once (the endpoint moves to ``source`` if any data or reply
        datagram in it set a new highest counter), and the loop is the
        receiver's hottest Python: per datagram one header slice, one
        decrypt, two replay-window calls (the second without a re-check).
        Results are appended to ``out``.
        """
        out = Batch() if out is None else out
        packets, drops = out.packets, out.drops
        replay = epoch.replay
        check, accept, accept_checked = replay.check, replay.accept, replay.accept_checked
        decrypt = epoch.recv_aead.decrypt
        alive = new_highest = False
        received = 0
        for datagram in datagrams:
            header = bytes(datagram[:HEADER_LEN])
            tail = header[5:]
            counter = int.from_bytes(tail, "big")
            if not check(counter):
                drops[Drop.REPLAYED] += 1
                continue
            try:
                plaintext = decrypt(_NONCE_PAD + tail, datagram[HEADER_LEN:], header)
            except InvalidTag:
                drops[Drop.BAD_AUTH] += 1
                continue
            kind = header[0]
            if kind == Kind.DATA:
                if not 0 < len(plaintext) <= 65535:
                    drops[Drop.MALFORMED] += 1
                    continue
                packets.append(plaintext)
                received += 1
            elif len(plaintext) != PROBE_ID_LEN:
                drops[Drop.MALFORMED] += 1
                continue
            elif kind == Kind.PROBE:  # answered, but proves nothing about our path to the peer
                accept(counter)
                reply = self.probe(Kind.PROBE_REPLY, plaintext)
                if reply is not None:
                    out.replies.append(reply)
                continue
            if counter > replay.highest:
                new_highest = True
            accept_checked(counter)  # check() passed above, and nothing was accepted since
            alive = True
            if kind == Kind.PROBE_REPLY and self.on_probe_reply is not None:  # `p2pvpn ping` waits for it
                self.on_probe_reply(bytes(plaintext))
        if alive:
            self.path.on_alive(source, new_highest and epoch is self.keys.current, now)
        self.rx_packets += received
        return out


_NONCE_PAD = bytes(4)


# A sender MUST rekey before 2^60; we stop using UDP a little before (the stream carries on).
_SEND_LIMIT = (1 << 60) - (1 << 20)
