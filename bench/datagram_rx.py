"""CPU per datagram of the datagram path's receive side, in-process: batch size and impairment.

Why: under the WAN emulator's ``low`` profile the receiving node was
CPU-bound (27 s/GiB against 9 on clean). There the link has no GRO, so each
recvmsg brings one datagram; this script replays that without sockets:
sealed datagrams of one inner TCP flow (1380-byte segments, 0.5 % loss,
1 % of them late by ``--late`` positions) go through the real receive code
(``DatagramSocket._handle``: demultiplex, the session's ladder, the ingress
checks, per-flow GRO, the TUN write) in batches of 1 (one datagram per
receive, what the node did before draining) and of RECV_BATCH (what it
drains now), alternating, so load from other processes hits both alike.
It reports µs of CPU per datagram and TUN writes per 100 datagrams.

    python bench/datagram_rx.py [--datagrams 20000] [--rounds 5] [--loss 0.005] [--reorder 0.01]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from libp2p.peer.id import ID  # noqa: E402

from p2pvpn import addressing  # noqa: E402
from p2pvpn.dataplane.ingress import datagram_receiver  # noqa: E402
from p2pvpn.dataplane.peer_queue import PacketQueue  # noqa: E402
from p2pvpn.dataplane.offload import segment  # noqa: E402
from p2pvpn.datagram.epochs import KeySchedule  # noqa: E402
from p2pvpn.datagram.session import DatagramSession  # noqa: E402
from p2pvpn.datagram.udp_socket import RECV_BATCH, DatagramSocket  # noqa: E402
from p2pvpn.routing import RouteTable  # noqa: E402
from p2pvpn.session.peer import Peer  # noqa: E402
from p2pvpn.testing.superpackets import tcp_record  # noqa: E402

SOURCE = ("198.18.0.1", 4001)


class CountingTun:
    """An offload TUN that counts writes (a real TUN write would add the kernel's TCP input)."""

    offload = True
    mtu = 1420

    def __init__(self) -> None:
        self.writes = 0
        self.packets = 0

    def write(self, packet: bytes) -> bool:
        self.writes += 1
        return True

    def write_record(self, record: bytes) -> bool:
        self.writes += 1
        return True


def flow(count: int, rng: random.Random) -> list[bytes]:
    """``count`` in-order 1380-byte segments of one TCP flow, as the sender's TUN would give them."""
    out: list[bytes] = []
    seq, ip_id = 1000, 1
    while len(out) < count:
        payload = rng.randbytes(1380 * 44)
        cut = segment(tcp_record("100.64.0.1", "100.64.0.2", payload, 1380, seq=seq, ip_id=ip_id))
        assert cut is not None
        out += cut
        seq += len(payload)
        ip_id += len(cut)
    return out[:count]


def impair(items: list[bytes], loss: float, reorder: float, late: int, rng: random.Random) -> list[bytes]:
    kept = [d for d in items if rng.random() >= loss]
    out: list[bytes] = []
    held: list[tuple[int, bytes]] = []
    for i, d in enumerate(kept):
        if rng.random() < reorder:
            held.append((i + late, d))
            continue
        out.append(d)
        while held and held[0][0] <= i:
            out.append(held.pop(0)[1])
    return out + [d for _, d in held]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datagrams", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.005)
    parser.add_argument("--reorder", type=float, default=0.01)
    parser.add_argument("--late", type=int, default=30, help="positions a reordered datagram arrives late")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (100 <= args.datagrams <= 1_000_000 and 1 <= args.rounds <= 50):
        parser.error("--datagrams 100..1000000, --rounds 1..50")
    rng = random.Random(1)
    packets = flow(args.datagrams, rng)
    peer_id = ID(b"\x00\x04peer")
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(peer_id, [bytes([100, 64, 0, 1])])
    results: dict[int, list[tuple[float, float]]] = {1: [], RECV_BATCH: []}
    for _ in range(args.rounds):
        for batch in (1, RECV_BATCH):
            indices = itertools.count(1)
            a = DatagramSession(KeySchedule(True, b"A" * 38, b"B" * 38, 4001, lambda: next(indices)))
            b = DatagramSession(KeySchedule(False, b"B" * 38, b"A" * 38, 4002, lambda: next(indices)))
            oa, ob = a.keys.start(), b.keys.start()
            a.keys.receive_offer(ob, 0.0)
            b.keys.receive_offer(oa, 0.0)
            sealed = impair(a.seal_packets(packets, 0.0), args.loss, args.reorder, args.late, rng)
            sock = DatagramSocket()
            tun = CountingTun()
            peer = Peer(peer_id=peer_id, addresses=addressing.derive(b"x", "default"), queue=PacketQueue(64))
            assert b.keys.current is not None
            sock.register(b, b.keys.current, datagram_receiver(peer, routes, tun))  # type: ignore[arg-type]
            received = [(d, 0, SOURCE) for d in sealed]
            started = time.process_time()
            for i in range(0, len(received), batch):
                sock._handle(received[i : i + batch], 1.0)
            cpu = time.process_time() - started
            if peer.stats.packets_in != len(sealed):
                print(f"datagram_rx: delivered {peer.stats.packets_in} of {len(sealed)}", file=sys.stderr)
                return 1
            results[batch].append((cpu / len(sealed) * 1e6, tun.writes / len(sealed) * 100))
    out = {f"batch_{k}": {"us_per_datagram": round(statistics.median(u for u, _ in v), 2),
                          "tun_writes_per_100": round(statistics.median(w for _, w in v), 1)}
           for k, v in results.items()}  # fmt: skip
    out["ratio_cpu"] = round(out[f"batch_{RECV_BATCH}"]["us_per_datagram"] / out["batch_1"]["us_per_datagram"], 3)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:12} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
