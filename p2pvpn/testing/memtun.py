"""An in-memory TUN for tests that exercise the data path without root."""

from __future__ import annotations

import trio


class MemoryTun:
    """``inject`` plays the kernel sending a packet; ``delivered`` holds what the node wrote."""

    def __init__(self, name: str = "mem0", mtu: int = 1400, capacity: int = 4096) -> None:
        self.name = name
        self.mtu = mtu
        self._send, self._recv = trio.open_memory_channel[bytes](capacity)
        self._delivered_send, self.delivered = trio.open_memory_channel[bytes](capacity)
        self.closed = False

    def inject(self, packet: bytes) -> None:
        self._send.send_nowait(packet)

    async def read_batch(self, max_packets: int) -> list[bytes]:
        packets = [await self._recv.receive()]
        while len(packets) < max_packets:
            try:
                packets.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                break
        return packets

    def write(self, packet: bytes) -> bool:
        try:
            self._delivered_send.send_nowait(packet)
        except trio.WouldBlock:
            return False
        return True

    def close(self) -> None:
        self.closed = True
