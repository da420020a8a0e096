"""Two send loops on one peer queue (a tunnel moving from a relay to a direct connection).

Regression: get_batch replaced the wake-up event on every wait, so a second
waiter, or a waiter that was being cancelled, stranded the first one: it
slept on an event nobody would set while packets piled up (a TCP transfer
stalled for good right after the tunnel moved).
"""

from __future__ import annotations

import trio

from p2pvpn.dataplane.peer_queue import PacketQueue


async def test_a_cancelled_second_waiter_does_not_strand_the_first() -> None:
    queue = PacketQueue(16)
    got: list[list[bytes]] = []

    async def new_loop() -> None:
        got.append(await queue.get_batch(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(new_loop)
        await trio.sleep(0.01)  # the new tunnel's loop waits first
        with trio.CancelScope() as old:  # the old tunnel's loop: waits, then is retired (cancelled)
            old.cancel()
            await queue.get_batch(65536)
        queue.put(b"packet")
        with trio.fail_after(1):
            while not got:
                await trio.sleep(0.01)
    assert got == [[b"packet"]]


async def test_two_waiters_both_wake_and_one_gets_the_packet() -> None:
    queue = PacketQueue(16)
    got: list[list[bytes]] = []

    async def loop() -> None:
        got.append(await queue.get_batch(65536))

    with trio.move_on_after(0.5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop)
            nursery.start_soon(loop)
            await trio.sleep(0.01)
            queue.put(b"one")
            queue.put(b"two")
            with trio.fail_after(1):
                while len(got) < 2:
                    await trio.sleep(0.01)
    assert sorted(b for batch in got for b in batch) == [b"one", b"two"]
