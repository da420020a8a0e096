"""One tunnel's datagram path, sans-IO: keys + path + the receive ladder (docs/protocol.md §16).

The socket layer (p2pvpn.datagram.socket) demultiplexes a datagram by its
receiver_index to a (session, epoch) pair and calls :meth:`receive`; the
tunnel calls :meth:`seal_packets` for data, :meth:`due_probes` on its timer,
and feeds the peer's offers to :attr:`keys`. Nothing here does I/O.

Receive ladder, each rung a named drop counted by the caller:
header (``udp_short``) -> receiver_index (``udp_unknown_index``, caller) ->
replay window pre-check (``udp_replayed``) -> AES-GCM tag (``udp_bad_auth``)
-> plaintext length (``udp_malformed``) -> replay window update -> deliver.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from p2pvpn.datagram.epochs import Epoch, KeySchedule
from p2pvpn.datagram.packet import HEADER, Kind, open_, plaintext_ok, seal
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


class DatagramSession:
    def __init__(self, keys: KeySchedule) -> None:
        self.keys = keys
        self.path = Path()
        self.tx_packets = 0
        self.rx_packets = 0
        self.on_probe_reply: Callable[[bytes], None] | None = None  # told each authenticated reply's probe id

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
        out = [seal(aead, Kind.DATA, index, counter + i, p) for i, p in enumerate(packets)]
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
        kind, _index, counter = HEADER.unpack_from(datagram)
        replay = epoch.replay
        if not replay.check(counter):
            return Received(drop=Drop.REPLAYED)
        plaintext = open_(epoch.recv_aead, datagram)
        if plaintext is None:
            return Received(drop=Drop.BAD_AUTH)
        if not plaintext_ok(kind, plaintext):
            return Received(drop=Drop.MALFORMED)
        new_highest = counter > replay.highest
        replay.accept(counter)
        if kind == Kind.PROBE:
            return Received(reply=self.probe(Kind.PROBE_REPLY, plaintext))
        self.path.on_alive(source, new_highest and epoch is self.keys.current, now)
        if kind == Kind.PROBE_REPLY and self.on_probe_reply is not None:
            self.on_probe_reply(bytes(plaintext))
        if kind == Kind.DATA:
            self.rx_packets += 1
            return Received(packet=plaintext)
        return Received()


# A sender MUST rekey before 2^60; we stop using UDP a little before (the stream carries on).
_SEND_LIMIT = (1 << 60) - (1 << 20)
