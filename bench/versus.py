"""Two versions of p2pvpn, alternating in one topology: iperf3 throughput and echo RTT, same run.

For before/after comparisons on a noisy machine: both versions see the
same load because their rounds alternate. A version is a source tree (e.g.
``git archive 493ee14 | tar -x -C /tmp/before``); its nodes run with
``PYTHONPATH`` and working directory set to it, with the current
interpreter and its packages. Topology and node options as
bench/latency.py; ``--shape 1gbit`` puts tc tbf on both veth ends (the
``clean`` profile of bench/throughput.py), without it the veth is bare
(``unshaped``).

Per round and version: start both nodes, wait for the first answered echo,
200 echoes 10 ms apart (bench/echo.py), iperf3 TCP a -> b over the tunnel
for ``--seconds``, stop the nodes.

    python bench/versus.py --before /tmp/before --after . [--rounds 2] [--shape 1gbit] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import latency as lab  # noqa: E402

from p2pvpn.lab.topology import LabError, Topology, require_netns  # noqa: E402

IPERF_PORT = 5202


def iperf3(a: lab.Host, b: lab.Host, addr: str, seconds: float) -> dict[str, Any]:
    b.popen("iperf3", "-s", "-1", "-B", addr, "-p", str(IPERF_PORT), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)  # fmt: skip
    b.wait_listening(IPERF_PORT)
    out = a.run("iperf3", "-c", addr, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J", timeout=seconds + 30).stdout
    end = json.loads(out)["end"]
    return {"mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
            "retransmits": end["sum_sent"].get("retransmits")}  # fmt: skip


def peer_stats(a: lab.Host, workdir: Path) -> dict[str, Any]:
    """Node a's counters for its peer b (frames and packets each way, drops), from ``peers --json``."""
    reply = json.loads(lab.cli(a, "peers", "--dir", str(workdir / a.name), "--json"))
    peers = reply["peers"] if isinstance(reply, dict) else reply
    keys = ("frames_out", "packets_out", "bytes_out", "frames_in", "packets_in", "bytes_in", "drops")
    return {k: peers[0].get(k) for k in keys} if peers else {}


def measure(trees: dict[str, Path], rounds: int, shape: str | None, seconds: float) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    base_env = dict(lab.ENV)
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        workdir = Path(tmp)
        a, b = topo.add_host("a"), topo.add_host("b")
        topo.link(a, b, lab.SUBNET, iface_a=lab.IFACE, iface_b=lab.IFACE)
        if shape:
            a.shape(lab.IFACE, shape)
            b.shape(lab.IFACE, shape)
        ids = lab.init_nodes(a, b, workdir)
        overlay_b = ids[b.name]["ipv4"]
        try:
            for _ in range(rounds):
                for name, tree in trees.items():
                    lab.ENV.clear()
                    lab.ENV.update(base_env, PYTHONPATH=str(tree))
                    lab.REPO = tree  # the nodes' working directory: `python -m p2pvpn` imports from it
                    procs = [lab.start_node(a, b, ids, workdir), lab.start_node(b, a, ids, workdir)]
                    try:
                        lab.wait_first_echo(a, overlay_b)
                        echo = lab.summary(lab.echo(a, "rtt", overlay_b, "--count", "200", "--interval", "0.01")["rtts"])
                        res = {"echo": echo, **iperf3(a, b, overlay_b, seconds)}
                        res["node_a"] = peer_stats(a, workdir)
                    finally:
                        res_codes = [lab.stop_node(p) for p in procs]
                    res["node_exit_codes"] = res_codes
                    results[name].append(res)
                    print(f"{name}: {res['mbit_s']} Mbit/s, echo median {echo['median_ms']} ms", file=sys.stderr)
        finally:
            lab.ENV.clear()
            lab.ENV.update(base_env)
            lab.REPO = REPO
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the first version")
    parser.add_argument("--after", type=Path, default=REPO, help="source tree of the second (default: this one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shape", default=None, help="tc tbf rate on both veth ends, e.g. 1gbit")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / "p2pvpn" / "__main__.py").is_file():
            parser.error(f"--{name} {tree}: not a p2pvpn source tree")
    if not (1 <= args.rounds <= 20 and 1 <= args.seconds <= 60):
        parser.error("--rounds 1..20, --seconds 1..60")
    reason = require_netns("iperf3", "tc")
    if reason is not None:
        print(f"versus: cannot run: {reason}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    try:
        results = measure(trees, args.rounds, args.shape, args.seconds)
    except (lab.BenchError, LabError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"versus: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"shape": args.shape, "results": results, "loadavg_after": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
