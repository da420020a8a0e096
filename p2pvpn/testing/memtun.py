"""An in-memory TUN for tests that exercise the data path without root."""

from __future__ import annotations

import trio

from p2pvpn.dataplane.offload import ZERO_VNET_HDR


class MemoryTun:
    """``inject`` plays the kernel sending a packet; ``delivered`` holds what the node wrote.

    With ``offload=True`` it behaves like a TUN opened with IFF_VNET_HDR and
    offload: what tests inject, and what arrives on ``delivered``, are
    records (10-byte virtio-net header + packet, see
    p2pvpn.dataplane.offload), exactly the bytes the kernel would exchange.
    """

    def __init__(self, name: str = "mem0", mtu: int = 1400, capacity: int = 4096, offload: bool = False) -> None:
        self.name = name
        self.mtu = mtu
        self.offload = offload
        self._send, self._recv = trio.open_memory_channel[bytes](capacity)
        self._delivered_send, self.delivered = trio.open_memory_channel[bytes](capacity)
        self.closed = False

    def inject(self, packet: bytes) -> None:
        self._send.send_nowait(packet)

    async def read_batch(self, max_packets: int) -> list[bytes]:
        first = await self._recv.receive()
        return [first, *self.read_now(max_packets - 1)]

    def read_now(self, max_packets: int) -> list[bytes]:
        packets: list[bytes] = []
        while len(packets) < max_packets:
            try:
                packets.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                break
        return packets

    def write(self, packet: bytes) -> bool:
        return self._deliver(ZERO_VNET_HDR + packet if self.offload else packet)

    def write_record(self, record: bytes) -> bool:
        if not self.offload:
            raise AssertionError("write_record on a MemoryTun without offload")
        return self._deliver(record)

    def _deliver(self, data: bytes) -> bool:
        try:
            self._delivered_send.send_nowait(data)
        except trio.WouldBlock:
            return False
        return True

    def close(self) -> None:
        self.closed = True
