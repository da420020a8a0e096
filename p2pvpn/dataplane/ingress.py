"""Inbound: frames from a peer's tunnel stream to our TUN.

1. Read whatever bytes the stream has (up to 256 KiB at once).
2. Feed them to the sans-IO decoder; it yields whole frames or raises
   ProtocolError, which ends the tunnel.
3. For each packet of a Data frame, the source check: the packet's source
   address must be an overlay address routed to the peer that sent it
   (anti-spoofing, WireGuard's cryptokey routing). Failures are dropped and
   counted (``malformed``, ``spoofed_source``, ``too_big``). Then the
   destination check: the packet must be addressed to us or to a route we
   serve for the peer (p2pvpn.dataplane.destinations), else
   ``bad_destination``.
4. The network policy, when one restricts anything (p2pvpn.policy,
   docs/protocol.md §17): a packet of a flow the policy does not allow is
   dropped and counted (``policy_denied``; the firewall counts the reason).
5. Write the packet to the TUN; a refusal is counted (``tun_write``).
Offload records (Data.offload_packets, only if both sides announced
``gso/1``) take the same ladder plus one rung: the virtio-net header must
be the packet's canonical one (``bad_offload``), and a super-packet must
fit the MTU segment by segment; they go to the TUN whole, header included.
Control frames (Keepalive, Close, a stray Hello, DatagramOffer) go to the
tunnel's handler.

Packets that came over the datagram path (docs/protocol.md §16, opened and
replay-checked by p2pvpn.datagram) enter at step 3 through
``datagram_receiver``, a whole drained UDP batch at a time: the same checks,
the same counters (a packet with the same addresses as the one accepted
before it skips the lookups); on an offload TUN, each flow's consecutive
TCP segments are then written as one super-packet (p2pvpn.dataplane.gro),
so the kernel takes 64 KiB per write again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2pvpn.dataplane import packet as ip
from p2pvpn.dataplane.gro import coalesce
from p2pvpn.dataplane.offload import VNET_HDR_LEN, canonical_header, segment_size
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer
from p2pvpn.stats import DropReason
from p2pvpn.tun.device import TunDevice
from p2pvpn.wire.codec import Data, Frame, FrameDecoder, ProtocolError

if TYPE_CHECKING:
    from p2pvpn.policy.firewall import Firewall

READ_SIZE = 256 * 1024
POLICY_DENIED = "policy_denied"  # step 4: the network policy does not allow the packet's flow


async def receive_from_peer(
    stream: INetStream,
    decoder: FrameDecoder,
    peer: Peer,
    routes: RouteTable[ID],
    tun: TunDevice,
    on_control: Callable[[Frame], Awaitable[None]],
    offload: bool = False,
    destination_ok: Callable[[bytes], bool] | None = None,
    firewall: Firewall | None = None,
) -> None:
    """Steps 1-5 until the stream ends (returns) or fails (raises).

    ``offload``: both sides announced ``gso/1`` (and so our TUN takes records).
    ``destination_ok``: the destination check (None: every destination, for tests of other steps).
    ``firewall``: the policy check of step 4 (None: no owned network).
    """
    accept = destination_ok or _any
    sender = peer.peer_id.to_bytes()
    stats = peer.stats
    drops = stats.drops
    peer_id = peer.peer_id
    mtu = tun.mtu
    while True:
        for frame in decoder.frames():
            if type(frame) is not Data:
                await on_control(frame)
                continue
            stats.frames_in += 1
            fw = firewall if firewall is not None and firewall.active else None
            now = time.monotonic() if fw is not None else 0.0
            for packet in frame.packets:
                source = ip.source(packet)
                if source is None:
                    drops[DropReason.MALFORMED] += 1
                elif not routes.source_allowed(peer_id, source):
                    drops[DropReason.SPOOFED_SOURCE] += 1
                elif not accept(ip.destination(packet)):  # type: ignore[arg-type]  # parsed: source was
                    drops[DropReason.BAD_DESTINATION] += 1
                elif len(packet) > mtu:
                    drops[DropReason.TOO_BIG] += 1
                elif fw is not None and fw.inbound(sender, packet, 0, now) is not None:
                    drops[POLICY_DENIED] += 1
                elif not tun.write(packet):
                    drops[DropReason.TUN_WRITE] += 1
                else:
                    stats.packets_in += 1
                    stats.bytes_in += len(packet)
            if frame.offload_packets and not offload:
                raise ProtocolError("Data frame with offload_packets, but gso/1 was not negotiated")
            for record in frame.offload_packets:
                source = ip.source(record, VNET_HDR_LEN)
                if source is None:
                    drops[DropReason.MALFORMED] += 1
                elif not routes.source_allowed(peer_id, source):
                    drops[DropReason.SPOOFED_SOURCE] += 1
                elif not accept(ip.destination(record, VNET_HDR_LEN)):  # type: ignore[arg-type]
                    drops[DropReason.BAD_DESTINATION] += 1
                elif canonical_header(record) != record[:VNET_HDR_LEN]:
                    drops[DropReason.BAD_OFFLOAD] += 1
                elif segment_size(record) > mtu:
                    drops[DropReason.TOO_BIG] += 1
                elif fw is not None and fw.inbound(sender, record, VNET_HDR_LEN, now) is not None:
                    drops[POLICY_DENIED] += 1
                elif not tun.write_record(record):
                    drops[DropReason.TUN_WRITE] += 1
                else:
                    stats.packets_in += 1
                    stats.bytes_in += len(record) - VNET_HDR_LEN
        data = await stream.read(READ_SIZE)
        if not data:
            return
        decoder.feed(data)


def datagram_receiver(
    peer: Peer,
    routes: RouteTable[ID],
    tun: TunDevice,
    destination_ok: Callable[[bytes], bool] | None = None,
    firewall: Firewall | None = None,
) -> Callable[[list[bytes]], None]:
    """Steps 3-5 for plain packets from the datagram path (one call per UDP receive, per tunnel)."""
    accept = destination_ok or _any
    stats = peer.stats
    drops = stats.drops
    peer_id = peer.peer_id
    source_allowed = routes.source_allowed
    write = tun.write
    sender = peer_id.to_bytes()

    def deliver(packets: list[bytes]) -> None:
        mtu = tun.mtu
        fw = firewall if firewall is not None and firewall.active else None
        now = time.monotonic() if fw is not None else 0.0
        accepted: list[bytes] = []
        # The checks depend on the addresses alone: a packet with the same address bytes as the
        # last accepted one (the next segment of a flow, nearly always) passes them too.
        last_v4 = last_v6 = b""
        for packet in packets:
            version = packet[0] >> 4 if packet else 0
            if version == 4 and len(packet) >= 20 and packet[12:20] == last_v4:
                pass
            elif version == 6 and len(packet) >= 40 and packet[8:40] == last_v6:
                pass
            else:
                source = ip.source(packet)
                if source is None:
                    drops[DropReason.MALFORMED] += 1
                    continue
                if not source_allowed(peer_id, source):
                    drops[DropReason.SPOOFED_SOURCE] += 1
                    continue
                if not accept(ip.destination(packet)):  # type: ignore[arg-type]  # parsed: source was
                    drops[DropReason.BAD_DESTINATION] += 1
                    continue
                if version == 4:
                    last_v4 = packet[12:20]
                else:
                    last_v6 = packet[8:40]
            if len(packet) > mtu:
                drops[DropReason.TOO_BIG] += 1
            elif fw is not None and fw.inbound(sender, packet, 0, now) is not None:
                drops[POLICY_DENIED] += 1
            else:
                accepted.append(packet)
        if tun.offload:  # each flow's consecutive TCP segments go in as one super-packet (p2pvpn.dataplane.gro)
            for record, count in coalesce(accepted):
                if tun.write_record(record):
                    stats.packets_in += count
                    stats.bytes_in += len(record) - VNET_HDR_LEN
                else:
                    drops[DropReason.TUN_WRITE] += count
            return
        for packet in accepted:
            if not write(packet):
                drops[DropReason.TUN_WRITE] += 1
            else:
                stats.packets_in += 1
                stats.bytes_in += len(packet)

    return deliver


def _any(destination: bytes) -> bool:
    return True
