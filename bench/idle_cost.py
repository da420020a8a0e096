"""What an idle node costs, full mesh vs on-demand tunnels: ``python bench/idle_cost.py`` (root).

For each mode it builds a p2pvpn.lab.demo.Lab of N nodes (default 10; one
namespace, one real TUN and one ``p2pvpn up`` process each; an owned
network, n1 the bootstrap), as bench/discovery_netns.py does, then:

1. waits WARMUP s (default 30, the issue's "30 s after start"); full mesh
   also waits (bounded) for every tunnel to be up;
2. ``reach``: every node pings the next one once (``ping -c 1 -W 6``); with
   on-demand tunnels this first packet waits for the address lookup, the
   dial and the handshake, so its RTT is the time to reach a member never
   contacted before;
3. waits until the nodes are idle (on demand: ``idle_timeout`` + 5 s, so the
   tunnels of step 2 have closed);
4. ``idle``: CPU seconds each process used over WINDOW s (default 60),
   as a percentage of one core, and its RSS at the end; tunnels still up.

Both modes run back to back in one invocation, so their ratio is measured
under the same machine load (report ``uptime`` with it). Everything is torn
down after each mode, also on Ctrl-C.

    python bench/idle_cost.py [--nodes 10] [--warmup 30] [--window 60] [--idle-timeout 10] [--modes mesh,ondemand]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.benchkit import proc_stat
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.lab.topology import LabError, require_netns
from p2pvpn.testing.owned import make_owned_network

POLL = 2.0
MESH_TIMEOUT = 240.0


def _tunnels_up(nodes: list[LabNode]) -> int:
    def count(node: LabNode) -> int:
        try:
            return sum(1 for p in node.status(timeout=5)["peers"] if p["state"] == "up")
        except ControlError:
            return 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(count, nodes))


def _first_rtt_ms(node: LabNode, dest: str) -> float | None:
    result = node.ping(dest, "-W", "6", count=1, timeout=20)
    match = re.search(r"time=([\d.]+) ms", result.stdout)
    return float(match.group(1)) if result.returncode == 0 and match else None


def measure(mode: str, size: int, warmup: float, window: float, idle_timeout: float) -> dict[str, Any]:
    with Lab(size) as lab:
        nodes = lab.nodes
        _, certificates = make_owned_network(nodes[0].directory, {n.name: n.directory for n in nodes[1:]})
        for node in nodes:
            c = certificates[node.name if node is not nodes[0] else ""]
            node.ipv4, node.ipv6 = str(c.ipv4), str(c.ipv6)
            if mode == "ondemand":
                with open(node.directory / "config.toml", "a") as f:
                    f.write(f"\non_demand = true\nidle_timeout = {idle_timeout}\n")
        started = time.monotonic()
        nodes[0].start(())
        for node in nodes[1:]:
            node.start((), "--bootstrap", nodes[0].dial_addr)
        result: dict[str, Any] = {"mode": mode, "nodes": size}
        pairs = size * (size - 1)
        if mode == "mesh":
            for _ in range(int(MESH_TIMEOUT / POLL) + 1):
                if _tunnels_up(nodes) >= pairs or time.monotonic() - started > MESH_TIMEOUT:
                    break
                time.sleep(POLL)
            result["mesh_s"] = round(time.monotonic() - started, 1)
        time.sleep(max(0.0, warmup - (time.monotonic() - started)))
        targets = [(node, nodes[(i + 1) % size]) for i, node in enumerate(nodes)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            rtts = list(pool.map(lambda t: _first_rtt_ms(t[0], t[1].ipv4), targets))
        answered = [r for r in rtts if r is not None]
        result["reach_answered"] = f"{len(answered)}/{len(rtts)}"
        result["reach_ms_median"] = round(statistics.median(answered), 1) if answered else None
        result["reach_ms_max"] = round(max(answered), 1) if answered else None
        if mode == "ondemand":  # what the nodes saw: lookups found / missing, drops by reason
            totals: dict[str, int] = {}
            for node in nodes:
                try:
                    st = node.status(timeout=5)
                except ControlError:
                    continue
                for k, v in ((st.get("discovery") or {}).get("address_lookups") or {}).items():
                    totals[f"lookup_{k}"] = totals.get(f"lookup_{k}", 0) + v
                for k, v in ((st.get("on_demand") or {}).get("drops") or {}).items():
                    totals[f"drop_{k}"] = totals.get(f"drop_{k}", 0) + v
                ms = (st.get("on_demand") or {}).get("lookup_ms_max")
                if ms is not None:
                    totals["lookup_ms_max"] = max(totals.get("lookup_ms_max", 0), ms)
            result["on_demand"] = totals
        if mode == "ondemand":
            time.sleep(idle_timeout + 5)
        else:
            time.sleep(5)
        pids = [n.proc.pid for n in nodes if n.proc is not None and n.proc.poll() is None]
        before = {pid: proc_stat(pid)[1] for pid in pids}
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        after = {pid: proc_stat(pid) for pid in pids}
        cpu = [100 * (after[p][1] - before[p]) / elapsed for p in pids]
        rss = [after[p][0] for p in pids]
        result["idle_cpu_pct_median"] = round(statistics.median(cpu), 2)
        result["idle_cpu_pct_max"] = round(max(cpu), 2)
        result["rss_mib_median"] = round(statistics.median(rss), 1)
        result["rss_mib_max"] = round(max(rss), 1)
        result["tunnels_up_at_end"] = _tunnels_up(nodes)
        result["load"] = os.getloadavg()[0]
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--modes", default="mesh,ondemand")
    args = parser.parse_args()
    if not 2 <= args.nodes <= 60:
        print("--nodes: 2..60", file=sys.stderr)
        return 2
    reason = require_netns("ping")
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    rows = []
    for mode in args.modes.split(","):
        if mode not in ("mesh", "ondemand"):
            print(f"--modes: unknown mode {mode!r} (mesh, ondemand)", file=sys.stderr)
            return 2
        print(f"measuring {mode}, {args.nodes} nodes...", file=sys.stderr, flush=True)
        for attempt in range(3):  # a lab's build (p2pvpn init per node) can time out on an overloaded machine
            try:
                rows.append(measure(mode, args.nodes, args.warmup, args.window, args.idle_timeout))
                break
            except LabError as exc:
                print(f"{mode}: {exc}; {'retrying' if attempt < 2 else 'giving up'}", file=sys.stderr, flush=True)
        else:
            return 1
        print(json.dumps(rows[-1]), flush=True)
    print(f"{'mode':9} {'reach (median/max ms)':>22} {'idle CPU % (median/max)':>24} {'RSS MiB (median/max)':>21} {'tunnels':>8}")
    for r in rows:
        print(f"{r['mode']:9} {str(r['reach_ms_median']) + ' / ' + str(r['reach_ms_max']):>22} "
              f"{str(r['idle_cpu_pct_median']) + ' / ' + str(r['idle_cpu_pct_max']):>24} "
              f"{str(r['rss_mib_median']) + ' / ' + str(r['rss_mib_max']):>21} {r['tunnels_up_at_end']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
