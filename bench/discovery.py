"""Discovery at scale, in one process: time to a full mesh and memory per node.

For each size N, a fresh Python process (so memory numbers do not carry
over) builds N real nodes on loopback with in-memory TUNs
(p2pvpn.testing.cluster): real libp2p hosts, noise, yamux, the private DHT
and the tunnel protocol; only the TUN is a MemoryTun. Node n0 has no
bootstrap; n1..n(N-1) know only n0's address. n0 owns the network and the
others hold its certificates (p2pvpn.testing.owned), so discovered members
get tunnels::

    n0 (bootstrap)  <──  n1, n2, ..., n(N-1)     all on 127.0.0.1, one trio loop

It reports, per size:

* ``started_s``   seconds until every node's ``run()`` reported started;
* ``mesh_s``      seconds from the first start until every node has a tunnel
                  to every other (N·(N-1) directed pairs);
* ``reach_s``     ... and until a UDP packet injected into each node's TUN
                  for each other node arrived at that node's TUN (all pairs;
                  a packet not there after 2 s is sent again, like a ping);
* ``rss_per_node_mib``  (RSS at the mesh - RSS before the first node) / N,
                  from /proc/self/status; ``peak_rss_mib`` is VmHWM;
* ``cpu_s`` / ``cpu_share``  process CPU time and its share of wall time
                  (1.0 = one core saturated: the loop is CPU-bound);
* ``dht_rpcs_per_s``   inbound DHT streams per second, all nodes together;
  ``get_record_network_pct``  share of record lookups that missed the local
                  value store and went to the network; ``rounds_per_node``
                  discovery rounds each node completed (mean).

A size that has no full mesh within ``--timeout`` seconds is aborted and
reported with how far it got (``pairs_up``) instead of a time.

Caveat: all nodes share one trio loop and one CPU core, and each node's
background work (DHT queries, keepalives) competes with every other's, so
times here are pessimistic compared with N machines; memory per node is
close to a real node's Python heap but without the interpreter baseline
(~40 MiB) each real process pays.

    python bench/discovery.py --sizes 10,25,50 [--timeout 240] [--interval 1] [--ttl 60] [--json]
    python bench/discovery.py --rpc-cost      # CPU per DHT request: what bounds all of the above
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_SIZES = "10,25,50"
DEFAULT_TIMEOUT = 240.0  # seconds per size from first start to a full mesh, then the size is aborted
REACH_TIMEOUT = 30.0     # seconds for every test packet to arrive once the mesh is up
REACH_RETRY = 2.0        # seconds before a test packet that has not arrived is sent again
SAMPLE = 1.0             # seconds between progress samples
KEEPALIVE = 5.0          # the node default (the test cluster's 0.5 s would add N² keepalives per second)


# -- one size, in its own process ---------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _DhtCounters:
    """Counts inbound DHT streams and how record lookups were answered (bench-only instrumentation)."""

    def __init__(self) -> None:
        self.inbound = 0
        self.lookups = 0           # Dht.get_record calls
        self.lookups_network = 0   # ... that had no valid stored copy and asked the network

    def install(self) -> None:
        from libp2p.kad_dht.kad_dht import KadDHT

        from p2pvpn import libp2p_compat
        from p2pvpn.discovery.dht import Dht

        # The start-up check reads KadDHT.handle_stream's source: run it on py-libp2p's own, not on our wrapper.
        libp2p_compat.check_once()

        counters = self
        handle_stream, get_value, get_record = KadDHT.handle_stream, KadDHT.get_value, Dht.get_record

        async def counting_handle_stream(dht: Any, stream: Any) -> None:
            counters.inbound += 1
            await handle_stream(dht, stream)

        async def counting_get_value(dht: Any, key: str, quorum: int = 0) -> bytes | None:
            if dht.value_store.get(key.encode("utf-8")) is None:
                counters.lookups_network += 1
            return await get_value(dht, key, quorum)

        async def counting_get_record(dht: Any, *args: Any, **kwargs: Any) -> bytes | None:
            counters.lookups += 1
            return await get_record(dht, *args, **kwargs)  # type: ignore[no-any-return]

        KadDHT.handle_stream = counting_handle_stream  # type: ignore[method-assign]
        KadDHT.get_value = counting_get_value  # type: ignore[method-assign]
        Dht.get_record = counting_get_record  # type: ignore[method-assign]


async def _measure(size: int, timeout: float, interval: float, ttl: float, workdir: Path) -> dict[str, Any]:
    import trio

    from p2pvpn.testing.cluster import Cluster, running
    from p2pvpn.testing.packets import udp4

    counters = _DhtCounters()
    counters.install()
    settings: dict[str, Any] = {"record_ttl": ttl, "discovery_interval": interval, "keepalive": KEEPALIVE}
    cluster = Cluster(workdir)
    # An owned network (n0 the owner, the others members): discovered peers get tunnels only with certificates.
    settings["network"] = cluster.owned("n0", [f"n{i}" for i in range(1, size)])
    boot = cluster.node("n0", **settings)
    nodes = [boot, *(cluster.node(f"n{i}", bootstrap=[cluster.addr("n0")], **settings) for i in range(1, size))]
    names = {node.peer_id: name for name, node in cluster.nodes.items()}
    pairs = size * (size - 1)

    rss_before = _status_kib("VmRSS")
    cpu_before = _cpu_s()
    result: dict[str, Any] = {"nodes": size, "pairs": pairs, "interval_s": interval, "ttl_s": ttl,
                              "timeout_s": timeout, "mesh_s": None, "reach_s": None}  # fmt: skip
    progress: list[tuple[float, int]] = []
    start = trio.current_time()

    def pairs_up() -> int:
        up = 0
        for node in nodes:
            if node.manager is not None:
                up += sum(1 for p in node.manager.peers.values() if p.tunnel is not None and p.peer_id in names)
        return up

    with trio.move_on_after(timeout) as budget:
        async with running(*nodes) as nursery:
            result["started_s"] = round(trio.current_time() - start, 1)
            for _ in range(int(timeout / SAMPLE) + 2):  # bounded in count and (by budget) in time
                up = pairs_up()
                progress.append((round(trio.current_time() - start, 1), up))
                if up >= pairs:
                    break
                await trio.sleep(SAMPLE)
            result["mesh_s"] = round(trio.current_time() - start, 1)
            rss_mesh = _status_kib("VmRSS")
            cpu_mesh = _cpu_s()
            result["reach_s"], result["reach_missing"] = await _reach_all(cluster, nodes, start, udp4)
            result["rounds_per_node"] = round(sum(n.discovery.rounds for n in nodes if n.discovery) / size, 1)
            nursery.cancel_scope.cancel()
    if budget.cancelled_caught:
        rss_mesh, cpu_mesh = _status_kib("VmRSS"), _cpu_s()
        result["aborted_after_s"] = timeout
    wall = (progress[-1][0] if progress else timeout) or 1.0
    result.update(
        pairs_up=progress[-1][1] if progress else 0,
        progress=_milestones(progress, pairs),
        rss_before_mib=round(rss_before / 1024, 1),
        rss_mesh_mib=round(rss_mesh / 1024, 1),
        peak_rss_mib=round(_status_kib("VmHWM") / 1024, 1),
        rss_per_node_mib=round((rss_mesh - rss_before) / 1024 / size, 2),
        cpu_s=round(cpu_mesh - cpu_before, 1),
        cpu_share=round((cpu_mesh - cpu_before) / wall, 2),
        dht_rpcs_per_s=round(counters.inbound / wall),
        record_lookups=counters.lookups,
        get_record_network_pct=round(100 * counters.lookups_network / max(1, counters.lookups)),
    )
    return result


async def _reach_all(cluster: Any, nodes: list[Any], start: float, udp4: Any) -> tuple[float | None, int]:
    """One UDP packet per directed pair, resent every REACH_RETRY s while it has not arrived.

    Returns (seconds from ``start`` until every pair delivered or None, pairs still missing).
    """
    import trio

    name_of = {node.peer_id: name for name, node in cluster.nodes.items()}
    missing: dict[str, dict[bytes, str]] = {name_of[n.peer_id]: {} for n in nodes}  # dst -> packet -> src
    for src in nodes:
        for dst in nodes:
            if src is not dst:
                packet = udp4(str(src.addresses.ipv4), str(dst.addresses.ipv4), f"{src.peer_id}>{dst.peer_id}".encode())
                missing[name_of[dst.peer_id]][packet] = name_of[src.peer_id]

    async def collect(name: str) -> None:
        want = missing[name]
        while want:
            want.pop(await cluster.tuns[name].delivered.receive(), None)

    with trio.move_on_after(REACH_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for name in missing:
                nursery.start_soon(collect, name)
            for _ in range(int(REACH_TIMEOUT / REACH_RETRY) + 1):  # bounded in count and time
                for want in missing.values():
                    for packet, src in list(want.items()):
                        cluster.tuns[src].inject(packet)
                with trio.move_on_after(REACH_RETRY):
                    while any(missing.values()):
                        await trio.sleep(0.05)
                if not any(missing.values()):
                    break
    left = sum(len(want) for want in missing.values())
    return (None if left else round(trio.current_time() - start, 1)), left


def _milestones(progress: list[tuple[float, int]], pairs: int) -> dict[str, float | None]:
    """Seconds until 50 %, 90 % and 100 % of the directed pairs first had a tunnel."""
    out: dict[str, float | None] = {}
    for pct in (50, 90, 100):
        out[f"{pct}%"] = next((t for t, up in progress if up * 100 >= pairs * pct), None)
    return out


async def _rpc_cost(count: int, workdir: Path) -> dict[str, Any]:
    """CPU per DHT request between two nodes of this process (client and server side together)."""
    import trio

    from p2pvpn.discovery import record as rec
    from p2pvpn.testing.cluster import Cluster, running

    quiet: dict[str, Any] = {"record_ttl": 300.0, "discovery_interval": 3600.0, "keepalive": 60.0}
    cluster = Cluster(workdir)
    quiet["network"] = cluster.owned("n0", ["n1"])
    a = cluster.node("n0", **quiet)
    b = cluster.node("n1", bootstrap=[cluster.addr("n0")], **quiet)
    out: dict[str, Any] = {"requests": count}
    async with running(a, b) as nursery:
        await trio.sleep(3)  # bootstrap and first publish done
        assert b.discovery is not None
        kad = b.discovery.dht.kad
        providers_key = bytes.fromhex(rec.provider_key(b.config.network, "members"))
        record_key = rec.record_key(b.config.network, a.peer_id).encode()
        calls = {
            "get_providers": lambda: kad.provider_store._get_providers_from_peer_with_closers(a.peer_id, providers_key),
            "get_value": lambda: kad.value_store._get_from_peer(a.peer_id, record_key),
        }
        for name, call in calls.items():
            cpu, wall = _cpu_s(), time.monotonic()
            with trio.fail_after(120):
                for _ in range(count):
                    await call()
            out[f"{name}_cpu_ms"] = round((_cpu_s() - cpu) / count * 1000, 2)
            out[f"{name}_wall_ms"] = round((time.monotonic() - wall) / count * 1000, 2)
        nursery.cancel_scope.cancel()
    return out


def run_one(size: int, timeout: float, interval: float, ttl: float) -> dict[str, Any]:
    import trio

    with tempfile.TemporaryDirectory(prefix="p2vbench-disc-") as tmp:
        return trio.run(_measure, size, timeout, interval, ttl, Path(tmp))


# -- the driver: one child process per size -----------------------------------------------


def measure_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", str(size), "--timeout", f"{args.timeout:g}",
            "--interval", f"{args.interval:g}", "--ttl", f"{args.ttl:g}"]  # fmt: skip
    started = time.monotonic()
    try:
        child = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout + REACH_TIMEOUT + 120)
    except subprocess.TimeoutExpired:
        return {"nodes": size, "error": f"the measuring process did not finish within {args.timeout + 150:g} s"}
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = " | ".join(child.stderr.strip().splitlines()[-3:])
        return {"nodes": size, "error": f"exit {child.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def _reach_cell(r: dict[str, Any]) -> str:
    if r.get("reach_s") is not None:
        return f"{r['reach_s']} s"
    if r.get("reach_missing"):
        return f"none ({r['reach_missing']} pairs lost)"
    return "-"


def table(results: list[dict[str, Any]]) -> str:
    head = ("nodes", "started", "50 %", "90 %", "mesh", "reach", "RSS/node", "peak RSS", "CPU share",
            "DHT RPC/s", "net lookups", "rounds")  # fmt: skip
    rows = [head]
    for r in results:
        if "error" in r:
            rows.append((str(r["nodes"]), f"error: {r['error']}", *[""] * (len(head) - 2)))
            continue
        mesh = f"{r['mesh_s']} s" if r.get("mesh_s") is not None else f"none in {r['timeout_s']:g} s ({r['pairs_up']}/{r['pairs']})"
        progress = r["progress"]
        rows.append((
            str(r["nodes"]), f"{r.get('started_s', '-')} s",
            f"{progress['50%']} s" if progress["50%"] is not None else "-",
            f"{progress['90%']} s" if progress["90%"] is not None else "-",
            mesh, _reach_cell(r),
            f"{r['rss_per_node_mib']} MiB", f"{r['peak_rss_mib']} MiB", f"{r['cpu_share']}",
            str(r["dht_rpcs_per_s"]), f"{r['get_record_network_pct']} %", str(r.get("rounds_per_node", "-")),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated node counts")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per size before it is aborted")
    parser.add_argument("--interval", type=float, default=1.0, help="--discovery-interval of every node")
    parser.add_argument("--ttl", type=float, default=60.0, help="--record-ttl of every node")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--rpc-cost", action="store_true", help="only measure the CPU cost of one DHT request")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args(argv)
    if args.rpc_cost:
        import trio

        with tempfile.TemporaryDirectory(prefix="p2vbench-rpc-") as tmp:
            cost = trio.run(_rpc_cost, 300, Path(tmp))
        if args.json:
            print(json.dumps(cost))
        else:
            print(f"one DHT request, client and server in this process, mean of {cost['requests']}:")
            for name in ("get_providers", "get_value"):
                print(f"  {name:14} {cost[name + '_cpu_ms']:6.2f} ms CPU   {cost[name + '_wall_ms']:6.2f} ms wall")
        return 0
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.timeout, args.interval, args.ttl)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(not 2 <= s <= 200 for s in sizes):
        parser.error("sizes must be within 2..200")
    results = []
    for size in sizes:
        if not args.json:
            print(f"measuring {size} nodes (at most {args.timeout:g} s)...", file=sys.stderr, flush=True)
        results.append(measure_size(size, args))
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "interval_s": args.interval,
            "ttl_s": args.ttl, "keepalive_s": KEEPALIVE, "timeout_s": args.timeout}  # fmt: skip
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print(table(results))
    return 0 if all(r.get("reach_s") is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
