import ipaddress

import trio

from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.dataplane import packet
from p2pvpn.testing.packets import udp4, udp6


async def test_bounded_and_batched() -> None:
    q = PacketQueue(4)
    assert all(q.put(bytes([i]) * 100) for i in range(4))
    assert not q.put(b"x")
    assert len(q) == 4
    batch = await q.get_batch(250)
    assert [p[0] for p in batch] == [0, 1]
    assert len(await q.get_batch(10_000)) == 2


async def test_batch_always_takes_one_even_if_too_big() -> None:
    q = PacketQueue(4)
    q.put(b"x" * 5000)
    assert await q.get_batch(100) == [b"x" * 5000]


async def test_waiter_woken_by_put() -> None:
    q = PacketQueue(4)
    got: list[bytes] = []

    async def consumer() -> None:
        got.extend(await q.get_batch(1000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.sleep(0.01)
        q.put(b"hello")
    assert got == [b"hello"]


def test_packet_addresses() -> None:
    p4 = udp4("100.64.0.1", "100.64.0.2", b"x")
    assert packet.source(p4) == bytes([100, 64, 0, 1]) and packet.destination(p4) == bytes([100, 64, 0, 2])
    p6 = udp6("fd00::1", "fd00::2", b"x")
    assert packet.source(p6) == ipaddress.IPv6Address("fd00::1").packed
    assert packet.destination(p6)[-1] == 2
    for bad in (b"", b"\x45" * 10, b"\x60" * 30, b"\x10" * 60):
        assert packet.source(bad) is None and packet.destination(bad) is None


async def test_batch_capped_by_packet_count() -> None:
    q = PacketQueue(5000)
    for _ in range(3000):
        q.put(b"x" * 20)
    assert len(await q.get_batch(1 << 20, 1024)) == 1024


async def test_requeue_puts_batch_back_in_order() -> None:
    q = PacketQueue(8)
    for i in range(4):
        q.put(bytes([i]))
    batch = await q.get_batch(2)
    q.requeue(batch)
    assert [p[0] for p in await q.get_batch(100)] == [0, 1, 2, 3]


async def test_bounded_in_bytes_too() -> None:
    # With TUN offload one packet may be a 64 KiB super-packet: the count bound alone is not enough.
    q = PacketQueue(1024, max_bytes=150_000)
    assert q.put(b"s" * 65545) and q.put(b"s" * 65545)
    assert not q.put(b"s" * 65545)
    assert q.put(b"a" * 1000)
    assert q.queued_bytes == 2 * 65545 + 1000
    batch = await q.get_batch(64 * 1024)
    assert len(batch) == 1 and q.queued_bytes == 65545 + 1000
    q.requeue(batch)
    assert q.queued_bytes == 2 * 65545 + 1000
    assert q.clear() == 3 and q.queued_bytes == 0
    assert PacketQueue(1024).put(b"x" * 2 * 1024 * 1024) and not PacketQueue(1024).put(b"x" * (2 * 1024 * 1024 + 1))
