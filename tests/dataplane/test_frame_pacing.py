"""Frame pacing on relayed tunnels (``send_to_peer(frame_gap=...)``), on trio's virtual clock.

A TCP flow through a relay offers packets a few at a time; without pacing
each few went out as its own frame, and per-frame cost along the relay
chain capped the tunnel (docs/performance.md). With a gap, what arrives
during the gap goes out as one frame, and a lone packet after a quiet
spell still leaves at once.
"""

from __future__ import annotations

import trio
import trio.testing

from p2pvpn.dataplane.egress import send_to_peer
from p2pvpn.testing.packets import udp4
from p2pvpn.wire.codec import Data, FrameDecoder

from test_offload_paths import A4, B4, make_peer

GAP = 0.002


def packet(i: int) -> bytes:
    return udp4(A4, B4, i.to_bytes(2, "big") * 600)


async def run_paced(arrivals: list[tuple[float, int]], gap: float) -> list[tuple[float, list[bytes]]]:
    """Feed packets at the given (virtual time, count) instants; return (time, packets) per frame written."""
    peer = make_peer()
    sent: list[tuple[float, list[bytes]]] = []
    start = trio.current_time()

    async def write(frame: bytes) -> None:
        decoder = FrameDecoder()
        decoder.feed(frame)
        (data,) = list(decoder)
        assert isinstance(data, Data)
        sent.append((round(trio.current_time() - start, 6), list(data.packets)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_to_peer, peer, write, False, False, gap)
        n = 0
        for at, count in arrivals:
            await trio.sleep_until(start + at)
            for _ in range(count):
                assert peer.queue.put(packet(n))
                n += 1
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return sent


async def test_packets_arriving_within_the_gap_share_one_frame(autojump_clock: trio.testing.MockClock) -> None:
    # one packet, then three more 0.5 ms apart: the first leaves at once, the rest together after the gap
    sent = await run_paced([(0.0, 1), (0.0005, 1), (0.001, 1), (0.0015, 1)], GAP)
    assert [(t, len(p)) for t, p in sent] == [(0.0, 1), (GAP, 3)]
    assert [p for _, ps in sent for p in ps] == [packet(i) for i in range(4)]  # order kept


async def test_without_a_gap_every_arrival_is_a_frame(autojump_clock: trio.testing.MockClock) -> None:
    sent = await run_paced([(0.0, 1), (0.0005, 1), (0.001, 1), (0.0015, 1)], 0.0)
    assert [len(p) for _, p in sent] == [1, 1, 1, 1]


async def test_a_lone_packet_after_a_quiet_spell_is_not_delayed(autojump_clock: trio.testing.MockClock) -> None:
    sent = await run_paced([(0.0, 1), (0.050, 1)], GAP)
    assert [(t, len(p)) for t, p in sent] == [(0.0, 1), (0.050, 1)]


async def test_a_lone_packet_leaves_without_waiting(autojump_clock: trio.testing.MockClock) -> None:
    # no gap (a direct tunnel): nothing waits for company; the frame is written at the instant of the put
    sent = await run_paced([(0.0, 1), (0.010, 1)], 0.0)
    assert sent == [(0.0, [packet(0)]), (0.010, [packet(1)])]
