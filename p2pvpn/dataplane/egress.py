"""Outbound: packets from our TUN to peers.

1. ``route_from_tun``: read a batch of packets from the TUN (one readiness
   wait, many reads). With TUN offload each one is a *record*: a virtio-net
   header, then a packet of up to 64 KiB (p2pvpn.dataplane.offload).
1'. ``route_ready``: or the datagram receive task reads the TUN without
   waiting, right after a small TUN write of its own, and takes what the
   kernel answered inside it (an echo reply) in the same wake-up; steps
   2-3' are the same (``route_batch``), step 3' for small answers only.
2. Look up each destination in the route table; unknown destinations are
   dropped and counted (``no_route``), unless tunnels open on demand
   (``demand``, p2pvpn.session.demand): then a packet for an overlay address
   without a route waits for its member's lookup (``Demand.miss``), and one
   queued for a known member without a tunnel asks for one (``Demand.wake``).
   With a network policy that restricts anything, the packet opens or
   refreshes its flow in the firewall's conntrack, so replies pass (p2pvpn.policy).
3. Put the packet on that peer's bounded queue; a full queue drops the
   packet for that peer only (``queue_full``): the TUN reader never waits
   for a peer.
3'. Unless the peer's queue is idle (nothing queued, no batch out with the
   send loop) and its tunnel's datagram path is usable: then the reader
   seals and sends the packet itself (``_send_direct``), without waiting,
   and saves the scheduler pass to the send loop (tens of µs per packet
   under load, docs/performance.md "Latency budget"). Nothing can be
   overtaken, since nothing of the peer's is waiting. Consecutive packets
   of one read for that peer go together (up to FRAME_BUDGET), so a burst
   of ACKs is still one GSO run. Whatever the socket does not take at once
   (a full buffer, an error) goes on the queue as in step 3
   (``udp_direct_fallbacks`` on the link); packets over the MTU are
   handled as in step 4.
4. ``send_to_peer`` (one per active tunnel): take everything queued, up to
   one frame's budget, and shape it for this tunnel (``_for_peer``): records
   go as they are to a peer that does offload too (``gso/1``), in wire form;
   for any other peer they are cut into plain packets with complete
   checksums. What exceeds the peer's MTU is cut into fragments if it is
   IPv4 without DF (p2pvpn.dataplane.fragment), else dropped (``too_big``). A batch
   whose write never happened goes back to the front of the queue for the
   next tunnel.
5. One ``stream.write`` per Data frame: py-libp2p's per-write cost (~300 µs
   here) is what limits throughput, so batching is the whole game.
5'. Unless the tunnel's datagram path is up (docs/protocol.md §16): then the
   batch goes as plain packets (records cut by ``offload.segment``), one
   sealed UDP datagram each, sent in GSO runs (p2pvpn.session.udp_link).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import trio
from libp2p.peer.id import ID

from p2pvpn.dataplane import offload
from p2pvpn.dataplane.fragment import fragment_ipv4, needs_df
from p2pvpn.dataplane import packet as ip
from p2pvpn.dataplane.offload import VNET_HDR_LEN, ZERO_VNET_HDR
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.stats import DropReason
from p2pvpn.tun.device import TunDevice
from p2pvpn.wire.codec import MAX_FRAME_LEN, MAX_PACKETS_PER_FRAME, encode_data, encode_offload_data

if TYPE_CHECKING:
    from p2pvpn.policy.firewall import Firewall

TUN_BATCH = 128            # packets per TUN readiness wakeup
FRAME_BUDGET = 64 * 1024   # bytes of packets taken from the queue per frame (one stream write)
RELAYED_FRAME_GAP = 0.002  # seconds between the frames of a relayed tunnel (see send_to_peer)
# What one frame may hold: its items plus at most 4 bytes of tag and length
# each, plus 8 for the Frame and Data headers, within MAX_FRAME_LEN.
_ITEM_OVERHEAD = 4
_FRAME_ROOM = MAX_FRAME_LEN - 8


class Demand(Protocol):
    """On-demand tunnels as the TUN reader sees them (p2pvpn.session.demand.OnDemand)."""

    def miss(self, destination: bytes, packet: bytes) -> bool:
        """A packet without a route: True if taken (queued for a lookup, or dropped and counted there)."""
        ...

    def wake(self, peer: Peer) -> None:
        """A packet was queued for ``peer``, which has no tunnel."""
        ...


class DatagramPath(Protocol):
    """The tunnel's datagram path as the send loop and the TUN reader see it (p2pvpn.session.udp_link.UdpLink)."""

    @property
    def usable(self) -> bool: ...

    async def send_packets(self, packets: list[bytes]) -> None: ...

    def send_now(self, packets: list[bytes]) -> int:
        """Seal and send without waiting; how many went (a prefix), the rest are the caller's to queue."""
        ...


DIRECT_SEND = True
"""Step 3' on or off (the benchmark's before/after switch, bench/latency.py --no-direct)."""
TUN_POLL = True
"""Step 1' on or off (route_ready; the before/after of bench/latency.py --ab --switch tun-poll and
bench/throughput.py --switch-baseline tun-poll)."""
TUN_POLL_MAX = 2
"""Step 1' only after a receive batch that wrote at most this many packets to the TUN (see route_ready)."""
TUN_POLL_DIRECT_BYTES = 512
"""Step 1' sends directly only a read whose packets are all this small (answers, not bulk data)."""


async def route_from_tun(
    tun: TunDevice,
    routes: RouteTable[ID],
    peers: Mapping[ID, Peer],
    drops: Counter[str],
    firewall: Firewall | None = None,
    demand: Demand | None = None,
) -> None:
    """Steps 1-3', forever."""
    while True:
        route_batch(await tun.read_batch(TUN_BATCH), tun.offload, routes, peers, drops, firewall, demand)


def route_ready(
    tun: TunDevice,
    routes: RouteTable[ID],
    peers: Mapping[ID, Peer],
    drops: Counter[str],
    firewall: Firewall | None = None,
    demand: Demand | None = None,
    delivered: int = 1,
) -> None:
    """Step 1': what the TUN holds right now, routed without waiting (steps 2-3'); nothing if it holds nothing.

    The datagram receive task calls this right after it wrote a batch to
    the TUN (p2pvpn.datagram.udp_socket, ``after_delivery``): the kernel
    answers some packets inside the write itself (an ICMP echo reply, a
    SYN-ACK, the inner TCP's ACK), and taking the answer here, in the same
    wake-up, saves the scheduler pass and epoll round that would wake the
    TUN reader for it. The reader and this call never run at once (one trio
    thread, no await in between), and each routes a whole read in order, so
    packets keep their order; the reader finds the TUN empty and waits
    again.

    Only after a small delivery (``delivered``, the packets just written, at
    most TUN_POLL_MAX), the request/response case it is for, and only a
    read of small answers is sent from here (TUN_POLL_DIRECT_BYTES): a
    sender's next TSO records, released inside an ACK's write, go to the
    send loop, which takes them in frames. Sending those directly too cost
    15 % of clean bulk throughput in a same-run A/B (docs/performance.md,
    "The receive task takes the kernel's answer")."""
    if TUN_POLL and delivered <= TUN_POLL_MAX:
        if batch := tun.read_now(TUN_BATCH):
            # Only small answers leave from here (step 3'); bulk data the kernel released inside the
            # write (a sender's next TSO records) is queued for the send loop, which takes it in frames.
            small = all(len(p) <= TUN_POLL_DIRECT_BYTES for p in batch)
            route_batch(batch, tun.offload, routes, peers, drops, firewall, demand, direct=small)


def route_batch(
    batch: list[bytes],
    tun_offload: bool,
    routes: RouteTable[ID],
    peers: Mapping[ID, Peer],
    drops: Counter[str],
    firewall: Firewall | None = None,
    demand: Demand | None = None,
    direct: bool = True,
) -> None:
    """Steps 2-3' for one read from the TUN: never waits. ``direct`` False: no step 3' for this read."""
    offset = VNET_HDR_LEN if tun_offload else 0
    direct = direct and DIRECT_SEND
    fw = firewall if firewall is not None and firewall.active else None
    now = time.monotonic() if fw is not None else 0.0
    held: list[bytes] = []      # step 3': packets for held_for's idle queue, sent together (one GSO run)
    held_for: Peer | None = None
    held_bytes = 0
    for packet in batch:
        destination = ip.destination(packet, offset)
        if destination is None:
            drops[DropReason.MALFORMED] += 1
            continue
        peer_id = routes.lookup(destination)
        peer = peers.get(peer_id) if peer_id is not None else None
        if peer is None:
            if demand is None or not demand.miss(destination, packet):
                drops[DropReason.NO_ROUTE] += 1
            continue
        if fw is not None:
            fw.outbound(packet, offset, now)
        # Step 3': a packet for another peer, or a frame's worth held: send what is held, then
        # decide anew (the queue's state cannot change in between: nothing here waits).
        if peer is not held_for or held_bytes + len(packet) > FRAME_BUDGET:
            if held_for is not None:
                _send_direct(held_for, held, tun_offload)
            held, held_bytes = [], 0
            held_for = peer if direct and peer.queue.idle and _datagram_path(peer) is not None else None
        if peer is held_for:
            held.append(packet)
            held_bytes += len(packet)
            continue
        if not peer.queue.put(packet):
            peer.stats.drops[DropReason.QUEUE_FULL] += 1
        elif demand is not None and peer.tunnel is None:
            demand.wake(peer)
    if held_for is not None:
        _send_direct(held_for, held, tun_offload)


def _datagram_path(peer: Peer) -> DatagramPath | None:
    """The active tunnel's datagram path if data may go over it now."""
    tunnel = peer.tunnel
    link = tunnel.link if tunnel is not None else None
    return link if link is not None and link.usable else None


def _send_direct(peer: Peer, batch: list[bytes], tun_offload: bool) -> None:
    """Step 3': ``batch`` (read for ``peer`` while its queue was idle) sealed and sent by the TUN reader.

    What exceeds the MTU is handled as the send loop does (step 4); what
    the socket does not take at once goes on the queue, in order, ahead of
    anything read later (records already cut go as plain records)."""
    tunnel = peer.tunnel
    assert tunnel is not None and tunnel.link is not None  # held only while _datagram_path(peer) was usable
    stats = peer.stats
    oversized: list[bytes] = []
    packets = _for_peer(batch, peer.mtu, tun_offload, False, stats.drops, oversized)
    _drop_too_big(peer, oversized, tunnel.too_big)
    if not packets:
        return
    sent = tunnel.link.send_now(packets)
    stats.packets_out += sent
    stats.bytes_out += sum(map(len, packets[:sent]))
    for rest in packets[sent:]:  # the buffer was full: the send loop waits for room
        if not peer.queue.put(ZERO_VNET_HDR + rest if tun_offload else rest):
            stats.drops[DropReason.QUEUE_FULL] += 1


def _drop_too_big(peer: Peer, oversized: list[bytes], too_big: Callable[[bytes, int], None] | None) -> None:
    """Count the packets over the peer's MTU (``too_big``) and tell ``too_big`` of each (ICMP)."""
    if oversized:
        peer.stats.drops[DropReason.TOO_BIG] += len(oversized)
        if too_big is not None:
            for packet in oversized:
                too_big(packet, peer.mtu)


async def send_to_peer(
    peer: Peer,
    write: Callable[[bytes], Awaitable[None]],
    tun_offload: bool = False,
    peer_offload: bool = False,
    frame_gap: float = 0.0,
    too_big: Callable[[bytes, int], None] | None = None,
    datagram: DatagramPath | None = None,
) -> None:
    """Steps 4-5 for one tunnel, until the write fails or we are cancelled.

    ``tun_offload``: the queue holds records; ``peer_offload``: both sides
    announced ``gso/1``, so records may travel as Data.offload_packets.

    ``frame_gap``: at least this many seconds between frames. Through a
    relay each frame costs a fixed amount of CPU along the chain (two
    nested yamux+Noise layers at each end, a read and a write at the
    relay) whatever its size, so a TCP flow's small frames capped a relayed
    tunnel at 5-14 Mbit/s while the backlog piled up, unseen, at the relay.
    Pacing keeps the backlog here instead, where it turns into larger
    frames (at most FRAME_BUDGET / frame_gap, 262 Mbit/s at 2 ms); a lone
    packet after a quiet spell still goes at once. docs/performance.md has
    the gap-vs-throughput measurements (0.5 ms is already too short).

    ``too_big(packet, mtu)`` hears of every packet dropped for exceeding
    the peer's MTU (to answer with ICMP, p2pvpn.dataplane.icmp).

    ``datagram``: the tunnel's datagram path; each batch goes over it when
    it is ``usable`` at that moment, else over the stream (step 5').
    """
    stats = peer.stats
    as_records = tun_offload and peer_offload
    encode = encode_offload_data if as_records else encode_data
    header_bytes = VNET_HDR_LEN if as_records else 0
    next_frame = 0.0
    while True:
        if frame_gap:
            await trio.sleep_until(next_frame)
        batch = await peer.queue.get_batch(FRAME_BUDGET, MAX_PACKETS_PER_FRAME)
        try:  # until done(), the TUN reader sends nothing past the queue (step 3'): it would overtake this batch
            oversized: list[bytes] = []
            if datagram is not None and datagram.usable:
                packets = _for_peer(batch, peer.mtu, tun_offload, False, stats.drops, oversized)
                _drop_too_big(peer, oversized, too_big)
                if packets:
                    await datagram.send_packets(packets)
                    stats.packets_out += len(packets)
                    stats.bytes_out += sum(map(len, packets))
                continue
            packets = _for_peer(batch, peer.mtu, tun_offload, peer_offload, stats.drops, oversized)
            _drop_too_big(peer, oversized, too_big)
            if not packets:
                continue
            frames = [encode(chunk) for chunk in _frames(packets)]  # one, unless segmentation grew the batch
            written = 0
            try:
                for frame in frames:
                    await write(frame)
                    written += 1
            finally:
                if not written:  # cancelled before the write began, or the stream failed: the next tunnel sends it
                    peer.queue.requeue(batch)
            stats.frames_out += written
            next_frame = trio.current_time() + frame_gap
            stats.packets_out += len(packets)
            stats.bytes_out += sum(map(len, packets)) - header_bytes * len(packets)
        finally:
            peer.queue.done()


def _for_peer(
    batch: list[bytes], mtu: int, tun_offload: bool, peer_offload: bool, drops: Counter[str], oversized: list[bytes]
) -> list[bytes]:
    """Step 4: the batch as this tunnel carries it; what exceeds the peer's MTU goes to ``oversized`` instead."""
    if not tun_offload:
        return _fitting(batch, mtu, oversized)                   # plain packets, as read
    if peer_offload:
        return _wire_records(batch, mtu, drops, oversized)       # records, in wire form
    packets: list[bytes] = []
    for record in batch:                              # plain packets, cut and checksummed here
        segments = offload.segment(record)
        if segments is None:
            drops[DropReason.BAD_OFFLOAD] += 1
        else:
            packets += segments
    return _fitting(packets, mtu, oversized)


def _fitting(packets: list[bytes], mtu: int, oversized: list[bytes]) -> list[bytes]:
    """The packets within ``mtu``, IPv4 without DF fragmented to fit (RFC 791); the rest go to ``oversized``."""
    if all(len(p) <= mtu for p in packets):
        return packets
    fitting: list[bytes] = []
    for packet in packets:
        if len(packet) <= mtu:
            fitting.append(packet)
        elif (fragments := fragment_ipv4(packet, mtu)) is not None:
            fitting += fragments
        else:
            oversized.append(packet)
    return fitting


def _wire_records(batch: list[bytes], mtu: int, drops: Counter[str], oversized: list[bytes]) -> list[bytes]:
    """Records with the canonical header (docs/protocol.md §5.3.1), each segment within ``mtu``.

    The kernel's header is canonical for locally generated traffic, so the
    record usually goes out untouched; a record without a wire form (say,
    forwarded traffic with unusual headers) is cut here instead.
    """
    records: list[bytes] = []
    for record in batch:
        header = offload.canonical_header(record)
        if header is None:
            segments = offload.segment(record)
            if segments is None:
                drops[DropReason.BAD_OFFLOAD] += 1
                continue
            records += (ZERO_VNET_HDR + s for s in _fitting(segments, mtu, oversized))
            continue
        if not record.startswith(header):
            record = header + record[VNET_HDR_LEN:]
        if offload.segment_size(record) > mtu:
            if record[1] == offload.GSO_NONE and not needs_df(record[VNET_HDR_LEN:]):
                plain = offload.segment(record)  # checksum completed first: fragments carry a final one
                if plain is not None:
                    records += (ZERO_VNET_HDR + p for p in _fitting(plain, mtu, oversized))
                    continue
            oversized.append(record[VNET_HDR_LEN:])
            continue
        records.append(record)
    return records


def _frames(items: list[bytes]) -> list[list[bytes]]:
    """Split ``items`` into groups that each fit one Data frame (count and MAX_FRAME_LEN)."""
    if len(items) <= MAX_PACKETS_PER_FRAME and sum(map(len, items)) + _ITEM_OVERHEAD * len(items) <= _FRAME_ROOM:
        return [items]
    groups: list[list[bytes]] = [[]]
    size = 0
    for item in items:
        cost = len(item) + _ITEM_OVERHEAD
        if groups[-1] and (size + cost > _FRAME_ROOM or len(groups[-1]) == MAX_PACKETS_PER_FRAME):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += cost
    return groups
