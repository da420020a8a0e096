"""Discovery with real processes: time to a full mesh and memory per node, ``python bench/discovery_netns.py`` (root).

For each size N (default 10, 25, 50) it builds a p2pvpn.lab.demo.Lab: N
network namespaces on one switch (198.18.1.0/24), one ``p2pvpn up``
process each with a real TUN. n1 starts with no bootstrap, every other
node with n1's address only and no static peers; all with the default
record TTL (300 s) and discovery interval (10 s) unless told otherwise.
n1 owns the network and the others hold its certificates
(p2pvpn.testing.owned), so discovered members get tunnels.
It reports, per size:

* ``mesh_s``: seconds from the first start until every node reports a
  tunnel "up" to every other (N*(N-1) directed tunnels), polled over the
  control sockets every POLL s;
* ``p50_s`` / ``p90_s``: ... until half / 90 % of the directed tunnels were up;
* ``ping``: after the mesh, each node pings one other node (the next one,
  round robin) through its TUN: answered / sent;
* ``rss_mib``: median and max resident memory of one node process
  (VmRSS) at the mesh, and ``cpu_s``: median CPU seconds a node used until then.

All nodes share this machine's cores; with 50 processes on 2 cores the
numbers measure contention as much as the protocol. The lab is torn down
(processes, namespaces, directories) after each size, also on Ctrl-C.

    python bench/discovery_netns.py [--sizes 10,25,50] [--interval 10] [--ttl 300] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.benchkit import proc_stat
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.lab.topology import require_netns
from p2pvpn.testing.owned import make_owned_network

POLL = 2.0


def _up_pairs(nodes: list[LabNode], ids: set[str]) -> int:
    def count(node: LabNode) -> int:
        try:
            peers = node.status(timeout=5)["peers"]
        except ControlError:
            return 0
        return sum(1 for p in peers if p["peer_id"] in ids and p["state"] == "up")

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(count, nodes))


def measure(size: int, interval: float, ttl: float, timeout: float) -> dict[str, Any]:
    flags = ("--discovery-interval", str(interval), "--record-ttl", str(ttl))
    with Lab(size) as lab:
        nodes = lab.nodes
        _, certificates = make_owned_network(nodes[0].directory, {n.name: n.directory for n in nodes[1:]})
        for node in nodes:  # the certificate decides the overlay addresses now
            c = certificates[node.name if node is not nodes[0] else ""]
            node.ipv4, node.ipv6 = str(c.ipv4), str(c.ipv6)
        ids = {n.peer_id for n in nodes}
        pairs = size * (size - 1)
        started = time.monotonic()
        nodes[0].start((), *flags)
        for node in nodes[1:]:
            node.start((), "--bootstrap", nodes[0].dial_addr, *flags)
        result: dict[str, Any] = {"nodes": size, "pairs": pairs, "interval_s": interval, "ttl_s": ttl,
                                  "mesh_s": None, "p50_s": None, "p90_s": None}  # fmt: skip
        up = 0
        for _ in range(int(timeout / POLL) + 1):  # bounded in count and time
            up = _up_pairs(nodes, ids)
            at = round(time.monotonic() - started, 1)
            if result["p50_s"] is None and up >= pairs / 2:
                result["p50_s"] = at
            if result["p90_s"] is None and up >= pairs * 0.9:
                result["p90_s"] = at
            if up >= pairs:
                result["mesh_s"] = at
                break
            if time.monotonic() - started > timeout:
                break
            time.sleep(POLL)
        result["pairs_up"] = up
        stats = [proc_stat(n.proc.pid) for n in nodes if n.proc is not None and n.proc.poll() is None]
        result["rss_mib_median"] = round(statistics.median(s[0] for s in stats), 1)
        result["rss_mib_max"] = round(max(s[0] for s in stats), 1)
        result["cpu_s_median"] = round(statistics.median(s[1] for s in stats), 1)
        targets = [(node, nodes[(i + 1) % size]) for i, node in enumerate(nodes)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answered = list(pool.map(lambda t: t[0].ping(t[1].ipv4, count=1, timeout=10).returncode == 0, targets))
        result["ping"] = f"{sum(answered)}/{len(answered)}"
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--interval", type=float, default=10.0, help="--discovery-interval of every node (default: the node default)")
    parser.add_argument("--ttl", type=float, default=300.0, help="--record-ttl of every node (default: the node default)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per size before giving up on the mesh")
    args = parser.parse_args()
    reason = require_netns("ping")
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"measuring {size} nodes (at most {args.timeout:g} s)...", file=sys.stderr, flush=True)
        rows.append(measure(size, args.interval, args.ttl, args.timeout))
        print(json.dumps(rows[-1]), flush=True)
    print(f"{'nodes':6} {'50 %':>7} {'90 %':>7} {'mesh':>14} {'ping':>7} {'RSS/node (max)':>16} {'CPU s/node':>10}")
    for r in rows:
        mesh = f"{r['mesh_s']} s" if r["mesh_s"] is not None else f"{r['pairs_up']}/{r['pairs']} up"
        print(f"{r['nodes']:<6} {str(r['p50_s']) + ' s':>7} {str(r['p90_s']) + ' s':>7} {mesh:>14} {r['ping']:>7} "
              f"{str(r['rss_mib_median']) + ' (' + str(r['rss_mib_max']) + ') MiB':>16} {r['cpu_s_median']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
