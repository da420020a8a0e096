"""CPU per packet of the whole data path: two nodes in one process, a bulk flow through them.

Two real nodes (p2pvpn.testing.cluster: libp2p hosts on loopback, Noise,
yamux, tunnel protocol; in-memory TUNs without offload), static peers, DHT
off. ``--packets`` UDP packets of 1328 bytes are pushed from a's TUN to
b's, ``--inflight`` at a time (within the peer queue's bound, so nothing is
dropped). Both nodes share one CPU, so Mbit/s here is the inverse of the
CPU cost per packet of both ends together, free of process wake-ups.

    python bench/bulk_inprocess.py [--tree DIR] [--packets 30000]

``--tree`` runs another source tree's p2pvpn (e.g. ``git archive 493ee14``
unpacked in /tmp/before), for before/after comparisons run back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--packets", type=int, default=30000)
    parser.add_argument("--inflight", type=int, default=400)
    args = parser.parse_args(argv)
    if not (1000 <= args.packets <= 1_000_000 and 1 <= args.inflight <= 1000):
        parser.error("--packets 1000..1000000, --inflight 1..1000")
    sys.path.insert(0, str(args.tree.resolve()))
    import trio

    from p2pvpn.testing.cluster import Cluster, running, wait_up
    from p2pvpn.testing.packets import udp4

    async def run() -> dict[str, object]:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(Path(tmp))
            cluster.node("a", dht="off")  # keys and ports first, so each can name the other
            cluster.node("b", dht="off")
            a = cluster.node("a", peers=[cluster.addr("b")], dht="off")
            b = cluster.node("b", peers=[cluster.addr("a")], dht="off")
            async with running(a, b) as nursery:
                await wait_up(a, b)
                await wait_up(b, a)
                packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), bytes(1300))
                ta, tb = cluster.tuns["a"], cluster.tuns["b"]
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.inflight):
                    ta.inject(packet)
                sent = args.inflight
                with trio.fail_after(300):
                    for _ in range(args.packets):
                        await tb.delivered.receive()
                        if sent < args.packets:
                            ta.inject(packet)
                            sent += 1
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                stats = a.manager.peers[b.peer_id].stats
                nursery.cancel_scope.cancel()
                return {"tree": str(args.tree), "mbit_s": round(args.packets * len(packet) * 8 / wall / 1e6),
                        "cpu_us_per_packet": round(cpu / args.packets * 1e6, 1),
                        "frames_out": stats.frames_out, "drops": dict(stats.drops)}  # fmt: skip
        raise AssertionError("unreachable")

    print(json.dumps(trio.run(run)))
    sys.stdout.flush()
    os._exit(0)  # py-libp2p leaves system tasks behind at shutdown; the numbers are out


if __name__ == "__main__":
    sys.exit(main())
