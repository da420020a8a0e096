"""Time from starting two nodes to the first answered ping, and after restarting one.

Topology and nodes as bench/latency.py (two namespaces, one veth, static
peers, ``--dht off``). Per run:

1. ``cold``: start both nodes at once; an echo every 10 ms from a to b's
   overlay address (bench/echo.py, raw ICMP) until the first reply. The
   time is from launching the two processes to that reply, so it includes
   Python's start-up (``python -c 'import p2pvpn.node'`` is reported too,
   as the part no protocol change can remove).
2. ``restart``: stop node b (SIGTERM, or SIGKILL with ``--kill``), start it
   again, and time from the new launch to the first reply, while node a
   keeps running and has to notice and redial.

Each run also reports, from the nodes' logs, when each node said "up" and
"tunnel ... up" (ms after launch), for the timeline in docs/performance.md,
and each node's resident memory (VmRSS) once the tunnel carried the echo.

Before the runs it measures the CPU seconds (user + system, so less
sensitive to the machine's load than wall time) of a fresh interpreter
doing ``import p2pvpn.node`` and of ``p2pvpn status`` / ``p2pvpn id`` (the
cost of every CLI command), min and median of ``--cpu-runs``.

With ``--before DIR`` (a copy of another commit, e.g. ``git archive main |
tar -x -C DIR``) the same is done for DIR's code too, and the runs
alternate between DIR and this checkout, so both are measured under the
same load:

    python bench/startup.py [--runs 5] [--kill] [--json] [--before DIR] [--cpu-runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import latency as lab  # noqa: E402  (bench/latency.py: topology and node helpers)

from p2pvpn.lab.topology import LabError, Topology, require_netns  # noqa: E402

SUBNET = "198.18.0.0/24"  # the underlay veth, as in bench/latency.py
FIRST_TIMEOUT = 30.0
_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
MARKS = {
    "tun": re.compile(r"^TUN offload"),  # the first line a node logs: Python and p2pvpn are imported
    "node up": re.compile(r"^node \S+ up:"),
    "tunnel up": re.compile(r"^tunnel with \S+ up"),
}


@contextlib.contextmanager
def code_tree(tree: Path) -> Iterator[None]:
    """Run nodes and CLI commands from ``tree`` (bench/latency.py reads REPO and ENV at each call)."""
    saved = lab.REPO, lab.ENV
    lab.REPO, lab.ENV = tree, {**os.environ, "PYTHONPATH": str(tree)}
    try:
        yield
    finally:
        lab.REPO, lab.ENV = saved


def import_seconds() -> float:
    """How long ``import p2pvpn.node`` takes in a fresh interpreter (Python's share of start-up)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import p2pvpn.node, p2pvpn.cli"], check=True, env=lab.ENV,
                   cwd=lab.REPO, timeout=60)  # fmt: skip
    return time.monotonic() - started


HOST_CODE = ("import p2pvpn.node\nfrom p2pvpn.host import Host\n"
             "from libp2p.crypto.ed25519 import create_new_key_pair\n"
             "Host(create_new_key_pair(), ['/ip4/127.0.0.1/tcp/0'])")


def cpu_seconds(argv: list[str], runs: int) -> dict[str, float]:
    """min / median CPU seconds (user + system) of a fresh ``python argv...`` in the current code tree."""
    spent = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, *argv], env=lab.ENV, cwd=lab.REPO, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"min": round(min(spent), 3), "median": round(statistics.median(spent), 3)}


def import_costs(runs: int) -> dict[str, Any]:
    """CPU of Python's start-up for a node and for a CLI command (no node needed: status fails fast)."""
    with tempfile.TemporaryDirectory(prefix="p2vstartup-") as tmp:
        subprocess.run([sys.executable, "-m", "p2pvpn", "init", "--dir", tmp], env=lab.ENV, cwd=lab.REPO,
                       timeout=120, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        return {
            "import_node_cpu_s": cpu_seconds(["-c", "import p2pvpn.node"], runs),
            # What a node imports before it listens includes the libp2p host's modules (built in Host()).
            "node_and_host_cpu_s": cpu_seconds(["-c", HOST_CODE], runs),
            "status_cpu_s": cpu_seconds(["-m", "p2pvpn", "status", "--dir", tmp], runs),
            "id_cpu_s": cpu_seconds(["-m", "p2pvpn", "id", "--dir", tmp], runs),
            "import_wall_s": round(import_seconds(), 3),
        }


def node_cpu_s(proc: subprocess.Popen[Any]) -> float | None:
    """CPU seconds (user + system) a node has used so far: its whole start, independent of the load."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def rss_mib(proc: subprocess.Popen[Any]) -> float | None:
    """Resident memory of a node (``ip netns exec`` execs it, so the pid is the node's)."""
    try:
        text = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return round(int(m.group(1)) / 1024, 1) if m else None


def log_marks(path: Path, since: float) -> dict[str, float]:
    """ms after ``since`` (wall clock) of the first line matching each of MARKS."""
    marks: dict[str, float] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return marks
    for line in lines:
        m = _LOG_RE.match(line)
        if m is None:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at < since - 0.001:
            continue
        for name, pattern in MARKS.items():
            if name not in marks and pattern.match(m.group(2)):
                marks[name] = round((at - since) * 1000)
    return marks


def one_run(kill: bool) -> dict[str, Any]:
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        workdir = Path(tmp)
        a, b = topo.add_host("a"), topo.add_host("b")
        topo.link(a, b, SUBNET, iface_a=lab.IFACE, iface_b=lab.IFACE)
        ids = lab.init_nodes(a, b, workdir)
        overlay_b = ids[b.name]["ipv4"]
        procs: list[subprocess.Popen[Any]] = []
        try:
            t0 = time.time()
            procs += [lab.start_node(a, b, ids, workdir), lab.start_node(b, a, ids, workdir)]
            cold = lab.wait_first_echo(a, overlay_b, FIRST_TIMEOUT) - t0
            res: dict[str, Any] = {"cold_s": round(cold, 3), "cold_a": log_marks(workdir / "a.log", t0),
                                   "cold_b": log_marks(workdir / "b.log", t0)}  # fmt: skip
            time.sleep(1.0)  # a settled tunnel, as a restart would find it
            res["rss_mib"] = [rss_mib(p) for p in procs]
            res["node_cpu_s"] = [node_cpu_s(p) for p in procs]  # start-up, tunnel and 1 s idle
            code = lab.stop_node(procs.pop(), signal.SIGKILL if kill else signal.SIGTERM)
            res["stop_exit_code"] = code
            t1 = time.time()
            procs.append(lab.start_node(b, a, ids, workdir))
            restart = lab.wait_first_echo(a, overlay_b, FIRST_TIMEOUT) - t1
            res.update(restart_s=round(restart, 3), restart_a=log_marks(workdir / "a.log", t1),
                       restart_b=log_marks(workdir / "b.log", t1))  # fmt: skip
        finally:
            for proc in procs:
                lab.stop_node(proc)
    return res


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rss = [v for r in runs for v in r.get("rss_mib", []) if v is not None]
    cpu = [v for r in runs for v in r.get("node_cpu_s", []) if v is not None]
    return {"cold_s": spread([r["cold_s"] for r in runs]), "restart_s": spread([r["restart_s"] for r in runs]),
            "idle_rss_mib": spread(rss) if rss else None, "node_cpu_s": spread(cpu) if cpu else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kill", action="store_true", help="restart after SIGKILL instead of SIGTERM")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--before", type=Path, help="another code tree to measure alternately (e.g. git archive main)")
    parser.add_argument("--cpu-runs", type=int, default=5, help="fresh interpreters per CPU measurement")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50 or not 1 <= args.cpu_runs <= 50:
        parser.error("--runs and --cpu-runs must be within 1..50")
    if args.before is not None and not (args.before / "p2pvpn" / "node.py").is_file():
        parser.error(f"--before {args.before}: no p2pvpn/node.py there")
    reason = require_netns()
    if reason is not None:
        print(f"startup: cannot run: {reason}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    trees = {"after": REPO} if args.before is None else {"before": args.before.resolve(), "after": REPO}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    costs: dict[str, dict[str, Any]] = {}
    try:
        for name, tree in trees.items():
            with code_tree(tree):
                costs[name] = import_costs(args.cpu_runs)
        for i in range(args.runs):
            for name, tree in trees.items():
                with code_tree(tree):
                    runs[name].append(one_run(args.kill))
                if not args.json:
                    r = runs[name][-1]
                    print(f"run {i + 1} {name}: cold {r['cold_s']:.3f} s (a {r['cold_a']}, b {r['cold_b']}); "
                          f"restart {r['restart_s']:.3f} s (b {r['restart_b']}); rss {r['rss_mib']} MiB",
                          file=sys.stderr)  # fmt: skip
    except (lab.BenchError, LabError, subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"startup: {exc}", file=sys.stderr)
        return 1
    res: dict[str, Any] = {"restart_signal": "SIGKILL" if args.kill else "SIGTERM", "loadavg_after": os.getloadavg()}
    for name in trees:
        res[name] = {**costs[name], **summary(runs[name]), "runs": runs[name]}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for name in trees:
            r = res[name]
            print(f"{name}: import p2pvpn.node {r['import_node_cpu_s']['min']:.3f} s CPU "
                  f"({r['node_and_host_cpu_s']['min']:.3f} with a libp2p host built); p2pvpn status "
                  f"{r['status_cpu_s']['min']:.3f} s CPU, id {r['id_cpu_s']['min']:.3f} s CPU (min of {args.cpu_runs})")
            for key in ("cold_s", "restart_s"):
                v = r[key]
                print(f"  {key[:-2]:8} min {v['min']:.3f}  median {v['median']:.3f}  max {v['max']:.3f} s")
            if r["node_cpu_s"]:
                v = r["node_cpu_s"]
                print(f"  node CPU to first echo + 1 s: min {v['min']} median {v['median']} max {v['max']} s")
            if r["idle_rss_mib"]:
                v = r["idle_rss_mib"]
                print(f"  idle RSS min {v['min']} median {v['median']} max {v['max']} MiB per node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
