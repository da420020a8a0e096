"""Where the microseconds of one packet go: a per-step budget of the data path.

Two real nodes in one process on loopback (p2pvpn.testing.cluster: real
libp2p hosts, Noise, yamux, tunnel protocol; in-memory TUNs), static peers,
DHT off. A 100-byte UDP packet is injected into a's TUN and awaited at b's;
then b answers the same way: one "ping" through the data path, ``--count``
times, one at a time. Each stage is wrapped to take a ``perf_counter``
stamp, so the budget is the median time between consecutive stamps:

    inject (TUN readable) -> tun_read (read_batch returned) -> queued
    -> dequeued (send loop has the batch) -> write_start (frame encoded)
    -> noise_out (Noise encrypts, TCP send begins) -> write_done (stream.write returned)
    -> noise_in (receiver: Noise record decrypted) -> stream_read (ingress has the bytes)
    -> tun_write (packet handed to b's TUN)

Both nodes share one CPU and one trio loop here, so this measures CPU and
scheduling cost, not process wake-ups (bench/latency.py measures those).

    python bench/latency_budget.py [--count 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
from libp2p.security.secure_session import SecureSession  # noqa: E402

from p2pvpn.dataplane.peer_queue import PacketQueue  # noqa: E402
from p2pvpn.session import tunnel as tunnel_mod  # noqa: E402
from p2pvpn.testing.cluster import Cluster, running, wait_up  # noqa: E402
from p2pvpn.testing.memtun import MemoryTun  # noqa: E402
from p2pvpn.testing.packets import udp4  # noqa: E402
from p2pvpn.wire import codec  # noqa: E402

STAGES = ("inject", "tun_read", "queued", "dequeued", "write_start", "noise_out", "write_done",
          "noise_in", "stream_read", "tun_write")  # fmt: skip


class Stamps:
    """First stamp of each stage for the packet in flight (one packet at a time)."""

    def __init__(self) -> None:
        self.now: dict[str, float] = {}
        self.armed = False

    def mark(self, stage: str) -> None:
        if self.armed and stage not in self.now:
            self.now[stage] = time.perf_counter()


STAMPS = Stamps()


def instrument() -> None:
    """Wrap each stage's function to stamp it (benchmark only, never the node's own code path)."""

    def after(fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        async def wrapped(*args: Any, **kw: Any) -> Any:
            out = await fn(*args, **kw)
            STAMPS.mark(stage)
            return out

        return wrapped

    MemoryTun.read_batch = after(MemoryTun.read_batch, "tun_read")  # type: ignore[method-assign]
    PacketQueue.get_batch = after(PacketQueue.get_batch, "dequeued")  # type: ignore[method-assign]
    put = PacketQueue.put

    def put_stamped(self: PacketQueue, packet: bytes) -> bool:
        ok = put(self, packet)
        STAMPS.mark("queued")
        return ok

    PacketQueue.put = put_stamped  # type: ignore[method-assign]
    write = tunnel_mod.Tunnel.write

    async def write_stamped(self: Any, data: bytes) -> None:
        STAMPS.mark("write_start")
        await write(self, data)
        STAMPS.mark("write_done")

    tunnel_mod.Tunnel.write = write_stamped  # type: ignore[method-assign]
    s_write, s_read = SecureSession.write, SecureSession.read

    async def noise_write(self: Any, data: bytes) -> None:
        STAMPS.mark("noise_out")
        await s_write(self, data)

    async def noise_read(self: Any, n: int | None = None) -> bytes:
        out = await s_read(self, n)
        if len(out) > 100:  # the data frame, not a yamux header read
            STAMPS.mark("noise_in")
        return out

    SecureSession.write, SecureSession.read = noise_write, noise_read  # type: ignore[method-assign]
    orig_feed = codec.FrameDecoder.feed

    def feed_stamped(self: Any, data: bytes) -> None:
        STAMPS.mark("stream_read")
        orig_feed(self, data)

    codec.FrameDecoder.feed = feed_stamped  # type: ignore[method-assign]
    deliver = MemoryTun._deliver

    def deliver_stamped(self: MemoryTun, data: bytes) -> bool:
        STAMPS.mark("tun_write")
        return deliver(self, data)

    MemoryTun._deliver = deliver_stamped  # type: ignore[method-assign]


async def measure(count: int) -> dict[str, Any]:
    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        cluster.node("a", dht="off")  # keys and ports first, so each can name the other
        cluster.node("b", dht="off")
        a = cluster.node("a", peers=[cluster.addr("b")], dht="off")
        b = cluster.node("b", peers=[cluster.addr("a")], dht="off")
        async with running(a, b):
            await wait_up(a, b)
            await wait_up(b, a)
            ta, tb = cluster.tuns["a"], cluster.tuns["b"]
            there = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), bytes(72))
            back = udp4(str(b.addresses.ipv4), str(a.addresses.ipv4), bytes(72))
            steps: dict[str, list[float]] = defaultdict(list)
            rtts: list[float] = []
            for i in range(count + 50):
                sent = time.perf_counter()
                for tun_in, tun_out, packet in ((ta, tb, there), (tb, ta, back)):
                    STAMPS.now = {}
                    STAMPS.armed = True
                    STAMPS.mark("inject")
                    tun_in.inject(packet)
                    with trio.fail_after(5):
                        await tun_out.delivered.receive()
                    STAMPS.armed = False
                    if i >= 50 and all(s in STAMPS.now for s in STAGES):  # the first 50 warm up
                        for prev, stage in zip(STAGES, STAGES[1:]):
                            steps[f"{prev} -> {stage}"].append(STAMPS.now[stage] - STAMPS.now[prev])
                        steps["one way"].append(STAMPS.now["tun_write"] - STAMPS.now["inject"])
                if i >= 50:
                    rtts.append(time.perf_counter() - sent)
    budget = {k: round(statistics.median(v) * 1e6, 1) for k, v in steps.items()}
    return {"count": count, "samples": len(steps.get("one way", [])), "median_us": budget,
            "rtt_us": {"min": round(min(rtts) * 1e6), "median": round(statistics.median(rtts) * 1e6)}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100_000:
        parser.error("--count must be within 1..100000")
    res = trio.run(measure, args.count)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for step, us in res["median_us"].items():
        print(f"{step:32} {us:8.1f} us")
    print(f"{'round trip (min / median)':32} {res['rtt_us']['min']:8d} / {res['rtt_us']['median']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
