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
"tunnel ... up" (ms after launch), for the timeline in docs/performance.md.

    python bench/startup.py [--runs 5] [--kill] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import latency as lab  # noqa: E402  (bench/latency.py: topology and node helpers)

from p2pvpn.lab.topology import LabError, Topology, require_netns  # noqa: E402

FIRST_TIMEOUT = 30.0
_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
MARKS = {
    "tun": re.compile(r"^TUN offload"),  # the first line a node logs: Python and p2pvpn are imported
    "node up": re.compile(r"^node \S+ up:"),
    "tunnel up": re.compile(r"^tunnel with \S+ up"),
}


def import_seconds() -> float:
    """How long ``import p2pvpn.node`` takes in a fresh interpreter (Python's share of start-up)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import p2pvpn.node, p2pvpn.cli"], check=True, env=lab.ENV,
                   cwd=REPO, timeout=60)  # fmt: skip
    return time.monotonic() - started


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
        topo.link(a, b, lab.SUBNET, iface_a=lab.IFACE, iface_b=lab.IFACE)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kill", action="store_true", help="restart after SIGKILL instead of SIGTERM")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be within 1..50")
    reason = require_netns()
    if reason is not None:
        print(f"startup: cannot run: {reason}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    runs = []
    try:
        imports = import_seconds()
        for i in range(args.runs):
            runs.append(one_run(args.kill))
            if not args.json:
                r = runs[-1]
                print(f"run {i + 1}: cold {r['cold_s']:.3f} s (a {r['cold_a']}, b {r['cold_b']}); "
                      f"restart {r['restart_s']:.3f} s (b {r['restart_b']})", file=sys.stderr)  # fmt: skip
    except (lab.BenchError, LabError, subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"startup: {exc}", file=sys.stderr)
        return 1
    res = {"import_s": round(imports, 3), "restart_signal": "SIGKILL" if args.kill else "SIGTERM",
           "cold_s": spread([r["cold_s"] for r in runs]), "restart_s": spread([r["restart_s"] for r in runs]),
           "runs": runs, "loadavg_after": os.getloadavg()}  # fmt: skip
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"import p2pvpn: {res['import_s']:.3f} s")
        for key in ("cold_s", "restart_s"):
            s = res[key]
            print(f"{key[:-2]:8} min {s['min']:.3f}  median {s['median']:.3f}  max {s['max']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
