"""A bounded per-peer packet queue: the TUN reader never waits for a peer.

A slow or dead peer fills only its own queue; further packets for it are
dropped (the caller counts them) while other peers keep flowing. The sender
takes everything waiting in one call so it can go out as one frame.

A batch stays *out* from ``get_batch`` until its sender calls ``done``: the
queue is ``idle`` only when nothing is queued and no batch is out, so the
TUN reader may send a packet past the queue (p2pvpn.dataplane.egress, step
3') without overtaking any packet taken before it.

The bound is in packets and in bytes: with TUN offload one "packet" may be
a 64 KiB super-packet, and a packet count alone would let a queue hold tens
of megabytes (and as many milliseconds of delay).
"""

from __future__ import annotations

from collections import deque

import trio

BYTES_PER_PACKET = 2048
"""Default byte bound per packet of the count bound: 2 MiB for 1024 packets."""


class PacketQueue:
    def __init__(self, max_packets: int, max_bytes: int | None = None) -> None:
        self._packets: deque[bytes] = deque()
        self._max = max_packets
        self._max_bytes = max_packets * BYTES_PER_PACKET if max_bytes is None else max_bytes
        self._bytes = 0
        self._out = 0  # batches taken by a sender and not yet reported done
        self._nonempty = trio.Event()

    def put(self, packet: bytes) -> bool:
        """Queue ``packet``; False (and nothing queued) when the queue is full."""
        if len(self._packets) >= self._max or self._bytes + len(packet) > self._max_bytes:
            return False
        self._packets.append(packet)
        self._bytes += len(packet)
        if not self._nonempty.is_set():
            self._nonempty.set()
        return True

    async def get_batch(self, max_bytes: int, max_packets: int = 1024) -> list[bytes]:
        """Wait for at least one packet, then take up to ``max_bytes`` and ``max_packets`` (at least one)."""
        while not self._packets:
            # Replace the event only once it has fired: while a tunnel moves, the old and
            # the new tunnel's send loops both wait here, and replacing an unset event
            # would strand the one waiting on it (even a waiter being cancelled gets here).
            if self._nonempty.is_set():
                self._nonempty = trio.Event()
            await self._nonempty.wait()
        packets = self._packets
        batch = [packets.popleft()]
        size = len(batch[0])
        while packets and size + len(packets[0]) <= max_bytes and len(batch) < max_packets:
            packet = packets.popleft()
            size += len(packet)
            batch.append(packet)
        self._bytes -= size
        self._out += 1
        return batch

    def done(self) -> None:
        """The sender is through with its last batch: sent, dropped and counted, or requeued."""
        if self._out:
            self._out -= 1

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch out: a packet sent past the queue now overtakes none."""
        return not self._packets and not self._out

    def requeue(self, batch: list[bytes]) -> None:
        """Put an unsent batch back at the front (its tunnel went away before the write)."""
        self._packets.extendleft(reversed(batch))
        self._bytes += sum(map(len, batch))
        if not self._nonempty.is_set():
            self._nonempty.set()

    def clear(self) -> int:
        """Drop everything queued (peer removed); returns how many packets were dropped."""
        n = len(self._packets)
        self._packets.clear()
        self._bytes = 0
        return n

    def drain(self) -> list[bytes]:
        """Take everything queued, oldest first (an on-demand dial gave up: each gets an ICMP answer)."""
        packets = list(self._packets)
        self.clear()
        return packets

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def queued_bytes(self) -> int:
        """Bytes queued."""
        return self._bytes
