"""The sender's CPU per packet with the TUN reader's direct send on and off, in one process (no root).

Why: the direct send (p2pvpn.dataplane.egress, step 3') removes a scheduler
pass per packet for latency; this checks that bulk traffic does not pay
for it. The real egress code (``route_from_tun`` + ``send_to_peer``) runs
against an in-memory TUN and a real UdpLink whose DatagramSocket sends to
a loopback UDP port nobody reads (the kernel drops there; the send cost is
paid in full). Traffic comes in bursts, then the loop idles until it is
sent, as a TCP sender's window does:

* ``tso``: offload TUN, bursts of ``--burst`` 64 KiB TCP super-packets
  (cut into 47 datagrams each: one GSO ``sendmsg`` per record or two);
* ``small``: plain TUN, bursts of ``--burst`` x 8 small UDP packets (ACK-like).

Modes alternate, ``--rounds`` times each; CPU is ``time.process_time``.

    python bench/direct_send_cpu.py [--records 2000] [--burst 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import ipaddress
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
import trio.testing  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402

from p2pvpn import addressing  # noqa: E402
from p2pvpn.dataplane import egress  # noqa: E402
from p2pvpn.dataplane.peer_queue import PacketQueue  # noqa: E402
from p2pvpn.datagram.epochs import KeySchedule  # noqa: E402
from p2pvpn.datagram.session import DatagramSession  # noqa: E402
from p2pvpn.datagram.udp_socket import DatagramSocket  # noqa: E402
from p2pvpn.routing import RouteTable  # noqa: E402
from p2pvpn.session.peer import Peer  # noqa: E402
from p2pvpn.session.udp_link import UdpLink  # noqa: E402
from p2pvpn.testing.memtun import MemoryTun  # noqa: E402
from p2pvpn.testing.packets import udp4  # noqa: E402
from p2pvpn.testing.superpackets import tcp_record  # noqa: E402

LOCAL, REMOTE = "100.64.0.1", "100.64.0.2"
PEER = ID(bytes.fromhex("002408011220") + bytes(32))
SINK = ("127.0.0.1", 9)  # discard: nothing listens, the kernel drops each datagram after the send


async def _no_write(frame: bytes) -> None:
    raise RuntimeError("the stream is not used here")


async def one(kind: str, direct: bool, records: int, burst: int) -> tuple[float, int]:
    """CPU seconds and datagrams sent for ``records`` units of traffic."""
    egress.DIRECT_SEND = direct
    sock = DatagramSocket("127.0.0.1")
    await sock.open()
    link = UdpLink(sock, True, b"A" * 38, b"B" * 38, None, _no_write, lambda packets: None)
    indices = itertools.count(100)
    other = DatagramSession(KeySchedule(False, b"B" * 38, b"A" * 38, 4001, lambda: next(indices)))
    offer_a, offer_b = link.session.keys.start(), other.keys.start()
    link.session.keys.receive_offer(offer_b, 0.0)
    other.keys.receive_offer(offer_a, 0.0)
    link.session.path.on_alive(SINK, True, trio.current_time())
    peer = Peer(peer_id=PEER, addresses=addressing.derive(PEER.to_bytes(), "default"), queue=PacketQueue(1024))
    peer.tunnel = SimpleNamespace(link=link, too_big=None)  # type: ignore[assignment]
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(PEER, [ipaddress.IPv4Address(REMOTE).packed])
    tun = MemoryTun(offload=kind == "tso", capacity=1 << 16)
    if kind == "tso":
        unit = [tcp_record(LOCAL, REMOTE, bytes(64 * 1024 - 200), gso_size=1348)]
    else:
        unit = [udp4(LOCAL, REMOTE, bytes(12)) for _ in range(8)]
    drops: Counter[str] = Counter()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(egress.route_from_tun, tun, routes, {PEER: peer}, drops)
            nursery.start_soon(egress.send_to_peer, peer, _no_write, kind == "tso", False, 0.0, None, link)
            await trio.testing.wait_all_tasks_blocked()
            cpu = time.process_time()
            for _ in range(records // burst):
                for _ in range(burst):
                    for packet in unit:
                        tun.inject(packet)
                await trio.testing.wait_all_tasks_blocked()  # sent: the loop idles until the next burst
            cpu = time.process_time() - cpu
            nursery.cancel_scope.cancel()
    finally:
        sock.close()
    if drops or peer.stats.drops:
        raise SystemExit(f"direct_send_cpu: drops {dict(drops)} {dict(peer.stats.drops)}")
    return cpu, peer.stats.packets_out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="bursts x burst size, per mode and kind")
    parser.add_argument("--burst", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (1 <= args.burst <= 64 and args.burst <= args.records <= 100_000 and 1 <= args.rounds <= 20):
        parser.error("--burst 1..64, --records burst..100000, --rounds 1..20")
    for kind in ("tso", "small"):
        per: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for direct in (True, False):
                cpu, sent = trio.run(one, kind, direct, args.records, args.burst)
                per[direct].append(cpu / sent * 1e6)
        on, off = statistics.median(per[True]), statistics.median(per[False])
        print(f"{kind:5}: CPU µs per datagram sent, direct on {on:.2f} (" + ", ".join(f"{x:.2f}" for x in per[True])
              + f"), off {off:.2f} (" + ", ".join(f"{x:.2f}" for x in per[False]) + f"); on/off {on / off:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
