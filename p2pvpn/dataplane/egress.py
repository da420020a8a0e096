"""Outbound: packets from our TUN to peers.

1. ``route_from_tun``: read a batch of packets from the TUN (one readiness
   wait, many reads).
2. Look up each destination in the route table; unknown destinations are
   dropped and counted (``no_route``).
3. Put the packet on that peer's bounded queue; a full queue drops the
   packet for that peer only (``queue_full``): the TUN reader never waits
   for a peer.
4. ``send_to_peer`` (one per active tunnel): take everything queued, up to
   one frame's budget, encode it as one Data frame. A batch whose write
   never happened goes back to the front of the queue for the next tunnel.
5. One ``stream.write`` per frame: py-libp2p's per-write cost (~300 µs here)
   is what limits throughput, so batching is the whole game.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from collections import Counter

from libp2p.peer.id import ID

from p2pvpn.dataplane import packet as ip
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.stats import DropReason
from p2pvpn.tun.device import TunDevice
from p2pvpn.wire.codec import MAX_PACKETS_PER_FRAME, encode_data

TUN_BATCH = 128            # packets per TUN readiness wakeup
FRAME_BUDGET = 64 * 1024   # bytes of packets per Data frame (one stream write)


async def route_from_tun(
    tun: TunDevice,
    routes: RouteTable[ID],
    peers: Mapping[ID, Peer],
    drops: Counter[str],
) -> None:
    """Steps 1-3, forever."""
    while True:
        for packet in await tun.read_batch(TUN_BATCH):
            destination = ip.destination(packet)
            if destination is None:
                drops[DropReason.MALFORMED] += 1
                continue
            peer_id = routes.lookup(destination)
            peer = peers.get(peer_id) if peer_id is not None else None
            if peer is None:
                drops[DropReason.NO_ROUTE] += 1
                continue
            if not peer.queue.put(packet):
                peer.stats.drops[DropReason.QUEUE_FULL] += 1


async def send_to_peer(peer: Peer, write: Callable[[bytes], Awaitable[None]]) -> None:
    """Steps 4-5 for one tunnel, until the write fails or we are cancelled."""
    stats = peer.stats
    while True:
        batch = await peer.queue.get_batch(FRAME_BUDGET, MAX_PACKETS_PER_FRAME)
        mtu = peer.mtu
        if any(len(p) > mtu for p in batch):
            kept = [p for p in batch if len(p) <= mtu]
            stats.drops[DropReason.TOO_BIG] += len(batch) - len(kept)
            batch = kept
            if not batch:
                continue
        frame = encode_data(batch)
        written = False
        try:
            await write(frame)
            written = True
        finally:
            if not written:  # cancelled before the write began, or the stream failed: the next tunnel sends it
                peer.queue.requeue(batch)
        stats.frames_out += 1
        stats.packets_out += len(batch)
        stats.bytes_out += sum(map(len, batch))
