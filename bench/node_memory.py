"""Where an idle node's memory goes: ``sudo python bench/node_memory.py`` (root; issue 16).

Builds a p2pvpn.lab.demo.Lab of N nodes (default 3; one namespace, one
real TUN and one ``p2pvpn up`` each; an owned network with on-demand
tunnels, n1 the bootstrap), pings n1 -> n2 once so one tunnel has carried
traffic, lets the nodes sit SETTLE s, then reads each process's /proc:

* start-up: seconds from launch until its control socket lists addresses,
  and its CPU seconds then;
* VmRSS, and ``smaps_rollup`` (anonymous vs file-backed, Pss);
* its threads, by name (``/proc/PID/task/*/comm``): trio's worker threads
  each get a glibc malloc arena;
* ``smaps`` of n2 grouped: ``[heap]`` (the main arena), anonymous mappings
  of 64 MiB-aligned arenas (other threads' malloc arenas), thread stacks,
  other anonymous mappings, file-backed.

Each ``--variant`` runs the whole thing again with extra environment for
the nodes (``NAME=VALUE,NAME=VALUE``; ``default`` = none), back to back in
one invocation, so the variants are compared under the same machine load.

``--imports`` instead measures, in fresh interpreters (no root, no
namespaces), the RSS and module count after each step of a node's start:
``import p2pvpn.cli`` (only in the CLI's process: ``up`` execs the node
without it, p2pvpn.node_process), ``import p2pvpn.node``, a libp2p host
built as the node builds it, and a netlink dump of the interface addresses
(p2pvpn.rtnl, as the node's address and TUN code uses it); and, for the node process, the Python memory each top-level
package's module bodies allocated (tracemalloc; a package's imports of
other packages excluded).

To compare two checkouts in one run (same machine load), give each as a
variant, ``--variant PYTHONPATH=/old/tree --variant PYTHONPATH=/new/tree``,
and run the bench from a directory without a ``p2pvpn/`` package.

    python bench/node_memory.py --imports [--json out.json]
    sudo python bench/node_memory.py [--nodes 3] [--window 60] [--settle 20] [--variant default --variant MALLOC_ARENA_MAX=1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.benchkit import bounded, proc_stat
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.lab.topology import LabError, require_netns
from p2pvpn.testing.owned import make_owned_network

READY_TIMEOUT = 120.0
POLL = 1.0
KIB = 1024
USR1_WAIT = 10.0  # seconds a node has to write its memdiag report


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kernel's totals for the process, KiB by field (Rss, Pss, Anonymous, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def thread_names(pid: int) -> dict[str, int]:
    """How many threads of each name the process has."""
    names: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[(task / "comm").read_text().strip()] += 1
        except OSError:  # the thread ended meanwhile
            continue
    return dict(names)


def smaps_groups(pid: int) -> dict[str, dict[str, float]]:
    """RSS (MiB) and mapping count by kind: heap, thread arenas, stacks, other anonymous, files."""
    groups: dict[str, list[float]] = {}
    kind, size = "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header line
            start, end = (int(x, 16) for x in head[0].split("-"))
            size = end - start
            path = head[5] if len(head) > 5 else ""
            if path == "[heap]":
                kind = "heap (main arena)"
            elif path == "[stack]":
                kind = "main stack"
            elif path.startswith("/"):
                kind = "file-backed"
            elif path:
                kind = path
            elif start % (64 * KIB * KIB) == 0 or size in (64 * KIB * KIB, 128 * KIB * KIB):
                kind = "thread malloc arenas"  # glibc aligns a thread arena's heap at HEAP_MAX (64 MiB)
            elif size == 8 * KIB * KIB + 4 * KIB or size == 8 * KIB * KIB:
                kind = "thread stacks"
            else:
                kind = "other anonymous"
            groups.setdefault(kind, [0.0, 0.0])[1] += 1
        elif head[0] == "Rss:":
            groups.setdefault(kind, [0.0, 0.0])[0] += int(head[1]) / KIB
    return {k: {"rss_mib": round(v[0], 1), "mappings": int(v[1])} for k, v in sorted(groups.items(), key=lambda kv: -kv[1][0])}


def smaps_files(pid: int, top: int = 20) -> list[tuple[str, float, float]]:
    """The file-backed mappings with the most RSS: (file, RSS MiB, Pss MiB), all of a file's mappings summed.

    Shared libraries a node maps but barely uses show up here (issue 16: which .so files cost what).
    """
    rss: Counter[str] = Counter()
    pss: Counter[str] = Counter()
    path = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            path = head[5] if len(head) > 5 and head[5].startswith("/") else ""
        elif path and head[0] in ("Rss:", "Pss:"):
            (rss if head[0] == "Rss:" else pss)[path] += int(head[1])
    short = {p: p.split("site-packages/")[-1] for p in rss}
    return [(short[p], round(v / KIB, 2), round(pss[p] / KIB, 2)) for p, v in rss.most_common(top)]


IMPORT_PROBE = r"""
import json, sys

# ``by_package``: Python memory allocated while each module's body ran (tracemalloc, its imports excluded),
# summed by top-level package; a wrapper around every loader's exec_module.
by_package = {}
if sys.argv[2:] == ["by_package"]:
    import importlib.abc, tracemalloc
    from collections import Counter
    by_package, _nested = Counter(), [0]

    class _Measure(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        break
            else:
                return None
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                real = spec.loader.exec_module
                def exec_module(module, real=real, name=name):
                    start = tracemalloc.get_traced_memory()[0]
                    _nested.append(0)
                    try:
                        real(module)
                    finally:
                        inner = _nested.pop()
                        total = tracemalloc.get_traced_memory()[0] - start
                        by_package[name.split(".")[0]] += total - inner
                        _nested[-1] += total
                try:
                    spec.loader.exec_module = exec_module
                except (AttributeError, TypeError):  # a loader that does not take attributes: counted in its importer
                    pass
            return spec

    tracemalloc.start()
    sys.meta_path.insert(0, _Measure())
    import p2pvpn  # installs p2pvpn.libp2p_import's finders first on sys.meta_path: measure in front of them
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Measure)]
    sys.meta_path.insert(0, _Measure())

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
steps = [("interpreter", rss(), len(sys.modules))]
if sys.argv[1] == "cli":  # the CLI process, and before p2pvpn.node_process: the node ran in it
    import p2pvpn.cli
    steps.append(("import p2pvpn.cli", rss(), len(sys.modules)))
else:  # what `up` execs (p2pvpn.node_process): no typer, pydantic, rich
    import p2pvpn.node_process
import p2pvpn.node
steps.append(("import p2pvpn.node", rss(), len(sys.modules)))
from libp2p.crypto.ed25519 import create_new_key_pair
from p2pvpn.host import Host, interface_addresses
Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
steps.append(("a libp2p host built", rss(), len(sys.modules)))
interface_addresses()
steps.append(("interface addresses dumped (netlink)", rss(), len(sys.modules)))
by = {}
for module in list(sys.modules):
    by[module.split(".")[0]] = by.get(module.split(".")[0], 0) + 1
print(json.dumps({"steps": [(n, round(r, 1), m) for n, r, m in steps],
                  "by_package_mib": {k: round(v / 2**20, 2) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])[:25]},
                  "modules_by_package": dict(sorted(by.items(), key=lambda kv: -kv[1])[:25])}))
"""


def import_cost() -> dict[str, Any]:
    """RSS (MiB) and module count after each step of a node's start, in fresh interpreters.

    ``cli``: the steps in the CLI's process (where the node ran before
    p2pvpn.node_process); ``node_process``: the process ``up`` execs.
    """
    out: dict[str, Any] = {}
    for where, extra in (("cli", []), ("node_process", []), ("node_process", ["by_package"])):
        result = subprocess.run([sys.executable, "-c", IMPORT_PROBE, where, *extra], capture_output=True, text=True,
                                timeout=300, check=False, cwd="/")  # fmt: skip
        if result.returncode != 0:
            return {"error": result.stderr.strip()[-500:]}
        probe = json.loads(result.stdout)
        if extra:  # tracemalloc inflates RSS: only its attribution is reported
            out["node_process_by_package_mib"] = probe["by_package_mib"]
        else:
            probe.pop("by_package_mib")
            out[where] = probe
    return out


def _ready(node: LabNode) -> bool:
    try:
        return bool(node.status(timeout=3).get("listen"))
    except ControlError:
        return False


def strace_counts(pid: int, seconds: float) -> dict[str, int]:
    """System calls of ``pid`` (all threads) over ``seconds``, by name (``strace -c``); {} without strace.

    ``epoll_wait`` calls are the event loop's wake-ups (trio waits in epoll between events and timers).
    """
    if shutil.which("strace") is None:
        return {}
    try:
        res = subprocess.run(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid)],
                             capture_output=True, text=True, timeout=seconds + 30, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {}
    counts: dict[str, int] = {}
    for line in res.stderr.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


def measure(variant: str, size: int, settle: float, usr1: bool = False, window: float = 0.0) -> dict[str, Any]:
    env = {} if variant == "default" else dict(kv.split("=", 1) for kv in variant.split(","))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # `ip netns exec` passes the environment on to the node
    try:
        with Lab(size) as lab:
            nodes = lab.nodes
            _, certs = make_owned_network(nodes[0].directory, {n.name: n.directory for n in nodes[1:]})
            for node in nodes:
                c = certs[node.name if node is not nodes[0] else ""]
                node.ipv4, node.ipv6 = str(c.ipv4), str(c.ipv6)
                with open(node.directory / "config.toml", "a") as f:
                    f.write("\non_demand = true\n")
            launched = {nodes[0].name: time.monotonic()}
            nodes[0].start(())
            for node in nodes[1:]:
                launched[node.name] = time.monotonic()
                node.start((), "--bootstrap", nodes[0].dial_addr)
            # start-up cost: wall time to a control socket that lists addresses (POLL resolution), and the
            # process's CPU seconds then (they survive the exec of p2pvpn.node_process: same process)
            ready_s: dict[str, float] = {}
            cpu_at_ready: dict[str, float] = {}
            deadline = time.monotonic() + READY_TIMEOUT
            for _ in range(int(READY_TIMEOUT / POLL) + 1):  # bounded in count and time
                for n in nodes:
                    if n.name not in ready_s and n.proc is not None and n.proc.poll() is None and _ready(n):
                        ready_s[n.name] = round(time.monotonic() - launched[n.name], 1)
                        cpu_at_ready[n.name] = round(proc_stat(n.proc.pid)[1], 2)
                if len(ready_s) == len(nodes) or time.monotonic() > deadline:
                    break
                time.sleep(POLL)
            first = nodes[0].ping(nodes[1].ipv4, "-W", "10", count=1, timeout=30)
            time.sleep(settle)
            if usr1:  # bench/memdiag/sitecustomize.py in the nodes' PYTHONPATH writes its report
                for n in nodes:
                    if n.proc is not None and n.proc.poll() is None:
                        os.kill(n.proc.pid, signal.SIGUSR1)
                time.sleep(USR1_WAIT)
            pids = {n.name: n.proc.pid for n in nodes if n.proc is not None and n.proc.poll() is None}
            idle: dict[str, Any] = {}
            if window > 0:  # idle CPU of every node over the window; system calls of n2 meanwhile
                before = {name: proc_stat(pid)[1] for name, pid in pids.items()}
                t0 = time.monotonic()
                calls = strace_counts(pids[nodes[1].name], window) if nodes[1].name in pids else {}
                time.sleep(max(0.0, window - (time.monotonic() - t0)))
                elapsed = time.monotonic() - t0
                cpu = {name: round(100 * (proc_stat(pid)[1] - before[name]) / elapsed, 2) for name, pid in pids.items()}
                idle = {"window_s": round(elapsed, 1), "cpu_pct": cpu, "cpu_pct_median": statistics.median(cpu.values()),
                        f"syscalls_{nodes[1].name}_per_s": {k: round(v / elapsed, 1) for k, v in
                                                            sorted(calls.items(), key=lambda kv: -kv[1])[:8]}}
            per_node = {name: {"rollup_kib": smaps_rollup(pid), "threads": thread_names(pid)} for name, pid in pids.items()}
            probe = nodes[1].name
            result: dict[str, Any] = {
                "variant": variant, "nodes": size, "alive": len(pids), "first_ping_ok": first.returncode == 0,
                "rss_mib": {n: round(v["rollup_kib"]["Rss"] / KIB, 1) for n, v in per_node.items()},
                "anonymous_mib": {n: round(v["rollup_kib"]["Anonymous"] / KIB, 1) for n, v in per_node.items()},
                "pss_mib": {n: round(v["rollup_kib"]["Pss"] / KIB, 1) for n, v in per_node.items()},
                "threads": {n: v["threads"] for n, v in per_node.items()},
                f"smaps_{probe}": smaps_groups(pids[probe]) if probe in pids else None,
                f"smaps_files_{probe}": smaps_files(pids[probe]) if probe in pids else None,
                "load": os.getloadavg()[0],
                "idle": idle,
                "ready_s": ready_s,
                "cpu_s_at_ready": cpu_at_ready,
            }
            if cpu_at_ready:
                result["ready_s_median"] = statistics.median(ready_s.values())
                result["cpu_s_at_ready_median"] = statistics.median(cpu_at_ready.values())
            if pids:
                result["rss_mib_median"] = round(statistics.median(result["rss_mib"].values()), 1)
                result["anonymous_mib_median"] = round(statistics.median(result["anonymous_mib"].values()), 1)
                result["pss_mib_median"] = round(statistics.median(result["pss_mib"].values()), 1)
            return result
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=bounded(int, 2, 20), default=3)
    parser.add_argument("--settle", type=bounded(float, 0, 600), default=20.0)
    parser.add_argument("--variant", action="append", default=[], help="NAME=VALUE[,NAME=VALUE] or default (repeatable)")
    parser.add_argument("--window", type=bounded(float, 0, 600), default=0.0,
                        help="also measure idle CPU over this many seconds, and n2's system calls (strace -c)")
    parser.add_argument("--imports", action="store_true", help="only the import probe (no root, no namespaces)")
    parser.add_argument("--usr1", action="store_true", help="send SIGUSR1 before measuring (for bench/memdiag)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    for v in args.variant:
        if v != "default" and not all("=" in kv for kv in v.split(",")):
            print(f"--variant {v!r}: expected NAME=VALUE[,NAME=VALUE] or default", file=sys.stderr)
            return 2
    if args.imports:
        text = json.dumps(import_cost(), indent=1)
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        print(text)
        return 0
    require_netns()
    results = []
    try:
        for variant in args.variant or ["default"]:
            results.append(measure(variant, args.nodes, args.settle, args.usr1, args.window))
            r = results[-1]
            if r["idle"]:
                print(f"{variant}: idle CPU median {r['idle']['cpu_pct_median']} %, n2 system calls/s "
                      f"{r['idle'][f'syscalls_n2_per_s']}", flush=True)
            print(f"{variant}: start-up: ready after {r.get('ready_s_median')} s, {r.get('cpu_s_at_ready_median')} CPU s "
                  f"(medians)", flush=True)
            print(f"{variant}: RSS median {r.get('rss_mib_median')} MiB, anonymous {r.get('anonymous_mib_median')} MiB, "
                  f"Pss {r.get('pss_mib_median')} MiB, "
                  f"alive {r['alive']}/{args.nodes}, load {r['load']:.1f}", flush=True)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    report = {"uptime_load": os.getloadavg(), "results": results}
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
