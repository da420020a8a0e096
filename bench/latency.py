"""Ping RTT through the VPN against the bare veth, in one run.

Topology (fresh, torn down even on failure)::

    host a  eth0 198.18.0.1/24 ───veth─── eth0 198.18.0.2/24  host b
            [tun p2v0 overlay]                [tun p2v0 overlay]

Both nodes run ``python -m p2pvpn up`` with each other as static peer and
``--dht off``. Echoes are sent from Python with a raw ICMP socket
(bench/echo.py), one at a time, ``--interval`` apart, alternating rounds of
veth and tunnel so load from other processes hits both alike. Reported:
min / median / p99 / max of each and the added RTT (tunnel - veth) of each
statistic.

    python bench/latency.py [--count 500] [--rounds 5] [--json] [--trace DIR] [--no-direct] [--no-tun-poll]
    python bench/latency.py --ab [--switch direct|tun-poll] [--swap]
    python bench/latency.py --ab --before DIR [--swap]     # DIR: another checkout's tree (git archive)

``--ab``: two pairs of hosts (a-b on 198.18.0.0/24, a1-b1 on 198.18.1.0/24),
the first with the switch on, the second with it off, both nodes of both
pairs under bench/latency_trace.py (which sets the switch and, without
``--trace``, stamps nothing), measured round by round in turn: the same-run
before/after of that change, with after/before ratios of the added RTT.
Switches (p2pvpn.dataplane.egress): ``direct``, the TUN reader's direct
datagram send (step 3', ``--no-direct``); ``tun-poll``, the datagram
receive task reading the kernel's answers from the TUN right after its
writes (step 1', ``--no-tun-poll``); both on by default. ``--swap``
gives the switch to the second pair instead. ``--before DIR``: the A/B of two
trees instead of a switch: the second pair's nodes run the p2pvpn in DIR
(e.g. ``git archive main p2pvpn | tar -x -C DIR``), under the same launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p2pvpn.lab.topology import Host, LabError, Topology, require_netns  # noqa: E402

IFACE = "eth0"
TUN = "p2v0"
VPN_PORT = 4001
CLI_TIMEOUT = float(os.environ.get("P2PVPN_BENCH_CLI_TIMEOUT", "30"))  # raise it on a loaded machine
UP_TIMEOUT = 60.0
ECHO = REPO / "bench" / "echo.py"
TRACER = REPO / "bench" / "latency_trace.py"
SWITCHES = {"direct": "P2PVPN_DIRECT_SEND", "tun-poll": "P2PVPN_TUN_POLL"}
"""Switches of p2pvpn.dataplane.egress a run can set -> the variable bench/latency_trace.py reads ("1" on, "0" off)."""
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TREE = "tree"
"""A variant's key naming the directory whose p2pvpn its nodes run (``--before``), instead of a switch."""


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def cli(host: Host, *argv: str) -> str:
    return host.run(sys.executable, "-m", "p2pvpn", *argv, timeout=CLI_TIMEOUT, env=ENV, cwd=REPO).stdout


def init_nodes(a: Host, b: Host, workdir: Path) -> dict[str, dict[str, Any]]:
    """``p2pvpn init`` in a and b; each one's ``id --json``."""
    ids = {}
    for host in (a, b):
        d = workdir / host.name
        cli(host, "init", "--dir", str(d))
        ids[host.name] = json.loads(cli(host, "id", "--dir", str(d), "--json"))
    return ids


def start_node(host: Host, peer: Host, ids: dict[str, dict[str, Any]], workdir: Path,
               extra: tuple[str, ...] = (), trace: Path | None = None,
               switches: dict[str, Any] | None = None) -> subprocess.Popen[Any]:  # fmt: skip
    """``p2pvpn up`` in ``host`` with ``peer`` as its static peer, DHT off; log in workdir/<name>.log.

    ``trace``: run it under bench/latency_trace.py, stamps to trace/<name>.trace.
    ``switches``: SWITCHES set on (True) or off, under the same launcher; unnamed ones keep their defaults."""
    env = dict(ENV)
    switches = dict(switches or {})
    tree = switches.pop(TREE, None)
    if tree is not None:  # that checkout's p2pvpn, first on sys.path (the cwd too: `-m` puts it first)
        env["PYTHONPATH"] = str(tree)
    if trace is not None:
        env["P2PVPN_TRACE_OUT"] = str(trace / f"{host.name}.trace")
    for switch, on in (switches or {}).items():
        env[SWITCHES[switch]] = "1" if on else "0"
    launcher = ("-m", "p2pvpn") if trace is None and not switches and tree is None else (str(TRACER),)
    with open(workdir / f"{host.name}.log", "ab") as log:
        return host.popen(
            sys.executable, *launcher, "up", "--dir", str(workdir / host.name),
            "--listen", f"/ip4/{host.address(IFACE)}/tcp/{VPN_PORT}",
            "--peer", f"/ip4/{peer.address(IFACE)}/tcp/{VPN_PORT}/p2p/{ids[peer.name]['peer_id']}",
            "--tun", TUN, "--dht", "off", *extra,
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree or REPO,
        )  # fmt: skip


def stop_node(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int | None:
    """Signal the node's process group and wait (bounded); its exit code, None if it hung."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        return None  # Topology.close() kills it


def node_cpu(procs: list[subprocess.Popen[Any]]) -> float:
    """CPU seconds (user + system) the node processes used so far: per echo, the nodes' cost of one, idle
    wake-ups included (a node runs in the launched process: the launchers keep it there, see start_node)."""
    total = 0
    for proc in procs:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def echo(host: Host, mode: str, addr: str, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    res = host.run(sys.executable, str(ECHO), mode, addr, *args, check=False, timeout=timeout, env=ENV)
    lines = res.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"echo {mode} {addr} printed nothing: {res.stderr.strip()[-200:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def wait_first_echo(host: Host, addr: str, timeout: float = UP_TIMEOUT) -> float:
    """Wall-clock time of the first answered echo to ``addr`` (one try every 10 ms)."""
    out = echo(host, "first", addr, "--interval", "0.01", "--timeout", f"{timeout:g}", timeout=timeout + 30)
    if out["answered_at"] is None:
        raise BenchError(f"no echo answered by {addr} within {timeout:g} s")
    return float(out["answered_at"])


def summary(rtts: list[float | None]) -> dict[str, Any]:
    got = sorted(r * 1000 for r in rtts if r is not None)
    if not got:
        raise BenchError("no echo was answered")
    p10 = got[int(len(got) * 0.10)]
    p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
    return {"n": len(rtts), "lost": len(rtts) - len(got), "min_ms": round(got[0], 3), "p10_ms": round(p10, 3),
            "median_ms": round(statistics.median(got), 3), "p99_ms": round(p99, 3), "max_ms": round(got[-1], 3)}  # fmt: skip


ADDED = ("min_ms", "p10_ms", "median_ms", "p99_ms")


def measure(count: int, rounds: int, interval: float, extra: tuple[str, ...],
            trace: Path | None = None, switches: dict[str, bool] | None = None) -> dict[str, Any]:  # fmt: skip
    """One pair of nodes: veth and tunnel echoes in alternating rounds."""
    res = measure_pairs(count, rounds, interval, extra, (switches or {},), trace)[0]
    if trace is not None:
        res["trace_us"] = trace_steps(trace / "a.trace", trace / "b.trace")
    return res


def measure_pairs(count: int, rounds: int, interval: float, extra: tuple[str, ...],
                  variants: tuple[dict[str, Any], ...], trace: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One pair of hosts per variant (the switches it sets), each on its own veth; their rounds interleave.

    With two variants (``--ab``) both pairs run side by side and take turns
    round by round (in ABBA order), so load from other processes hits both
    alike: the before/after of one run."""
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        workdir = Path(tmp)
        pairs: list[tuple[Host, Host, str, str]] = []
        procs: list[subprocess.Popen[Any]] = []
        try:
            for k, switches in enumerate(variants):
                suffix = "" if k == 0 else str(k)
                a, b = topo.add_host("a" + suffix), topo.add_host("b" + suffix)
                _, addr_b = topo.link(a, b, f"198.18.{k}.0/24", iface_a=IFACE, iface_b=IFACE)
                ids = init_nodes(a, b, workdir)
                procs += [start_node(a, b, ids, workdir, extra, trace, switches),
                          start_node(b, a, ids, workdir, extra, trace, switches)]  # fmt: skip
                pairs.append((a, b, addr_b, ids[b.name]["ipv4"]))
            for a, b, _, overlay_b in pairs:
                try:
                    wait_first_echo(a, overlay_b)
                except BenchError as exc:  # say why: the nodes' own last words
                    tails = {h.name: (workdir / f"{h.name}.log").read_text(errors="replace")[-1500:] for h in (a, b)}
                    raise BenchError(f"{exc}; node logs: {tails}") from None
            veth: list[list[float | None]] = [[] for _ in pairs]
            tunnel: list[list[float | None]] = [[] for _ in pairs]
            cpu = [0.0 for _ in pairs]  # both nodes' CPU seconds during the tunnel rounds
            per_round = max(1, count // rounds)
            args = ("--count", str(per_round), "--interval", f"{interval:g}")
            for r in range(rounds):
                order = list(range(len(pairs))) if r % 2 == 0 else list(reversed(range(len(pairs))))
                for k in order:
                    a, _, addr_b, overlay_b = pairs[k]
                    veth[k] += echo(a, "rtt", addr_b, *args)["rtts"]
                    before = node_cpu(procs[2 * k : 2 * k + 2])
                    tunnel[k] += echo(a, "rtt", overlay_b, *args)["rtts"]
                    cpu[k] += node_cpu(procs[2 * k : 2 * k + 2]) - before
        finally:
            codes = [stop_node(p) for p in procs]
    out = []
    for k, switches in enumerate(variants):
        res: dict[str, Any] = {"switches": switches, "veth": summary(veth[k]), "tunnel": summary(tunnel[k]),
                               "node_exit_codes": codes[2 * k : 2 * k + 2]}  # fmt: skip
        res["added_ms"] = {key: round(res["tunnel"][key] - res["veth"][key], 3) for key in ADDED}
        res["node_cpu_us_per_echo"] = round(cpu[k] / max(1, len(tunnel[k])) * 1e6, 1)
        out.append(res)
    return out


# "tun_read -> sealed" holds the hop to the send loop (a queue_get stamp) unless the TUN reader sent the
# packet itself (egress step 3'); the steps leave queue_get out, so runs with and without it compare.
TRACE_STEPS = (
    ("a", "tun_read", "8"), ("a", "sealed", None), ("a", "udp_sent", None),
    ("b", "wake", None), ("b", "udp_recv", None), ("b", "opened", "8"), ("b", "tun_write", "8"),
    ("b", "tun_read", "0"), ("b", "sealed", None), ("b", "udp_sent", None),
    ("a", "wake", None), ("a", "udp_recv", None), ("a", "opened", "0"), ("a", "tun_write", "0"),
)


def trace_steps(path_a: Path, path_b: Path) -> dict[str, Any]:
    """Median µs from each traced step of an echo to the next, over the echoes whose steps all matched.

    One echo's steps are the first stamp of each kind after the previous step, within 20 ms
    (the echoes are ``--interval`` apart, so they do not interleave)."""
    events: list[tuple[int, str, str, str]] = []
    for node, path in (("a", path_a), ("b", path_b)):
        for line in path.read_text().splitlines():
            t, event, *detail = line.split(" ")
            events.append((int(t), node, event, detail[0] if detail else ""))
    events.sort()
    starts = [i for i, e in enumerate(events) if e[1:3] == ("a", "tun_read") and e[3].startswith("8:")]
    gaps: list[list[int]] = []
    for i in starts:
        t0, seq = events[i][0], events[i][3].split(":")[1]
        row, j, prev = [], i, t0
        for node, event, kind in TRACE_STEPS[1:]:
            j += 1
            while j < len(events) and events[j][0] - t0 < 20_000_000:
                e = events[j]
                if e[1] == node and e[2] == event and (kind is None or e[3] == f"{kind}:{seq}"):
                    break
                j += 1
            else:
                break
            row.append(events[j][0] - prev)
            prev = events[j][0]
        if len(row) == len(TRACE_STEPS) - 1:
            gaps.append(row)
    if not gaps:
        return {"echoes": 0}
    names = [f"{n}.{e}" for n, e, _ in TRACE_STEPS]
    steps = {f"{names[k]} -> {names[k + 1]}": round(statistics.median(g[k] for g in gaps) / 1000, 1)
             for k in range(len(names) - 1)}  # fmt: skip
    total = round(statistics.median(sum(g) for g in gaps) / 1000, 1)
    return {"echoes": len(gaps), "steps": steps, "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="echoes per path, in total")
    parser.add_argument("--rounds", type=int, default=5, help="alternating veth/tunnel rounds")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between echoes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trace", type=Path, help="run the nodes under bench/latency_trace.py; stamps in this dir")
    parser.add_argument("--no-direct", action="store_true",
                        help="turn the TUN reader's direct datagram send off (the before of a before/after)")
    parser.add_argument("--no-tun-poll", action="store_true",
                        help="turn the receive task's TUN read after its writes off (egress step 1')")
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="direct",
                        help="with --ab: the switch on in one pair and off in the other (default: direct)")
    parser.add_argument("--ab", action="store_true",
                        help="two node pairs side by side, --switch on and off, rounds interleaved: a same-run "
                             "before/after")
    parser.add_argument("--before", type=Path,
                        help="with --ab: the second pair runs the p2pvpn of this tree (a checkout or git archive) "
                             "instead of a switch off; both pairs under the same launcher")
    parser.add_argument("--swap", action="store_true",
                        help="with --ab: the switch off in the first pair, on in the second (a positional check)")
    parser.add_argument("node_args", nargs="*", help="extra `p2pvpn up` arguments (after --)")
    args = parser.parse_args(argv)
    if not (1 <= args.count <= 20_000 and 1 <= args.rounds <= args.count and 0 < args.interval <= 1):
        parser.error("--count 1..20000, --rounds 1..count, --interval 0..1 s")
    uses_ab = args.swap or args.before is not None
    if args.ab and (args.trace is not None or args.no_direct or args.no_tun_poll) or uses_ab and not args.ab:
        parser.error("--ab runs both variants itself, without --trace; --swap and --before need --ab")
    if args.before is not None and not (args.before / "p2pvpn" / "__init__.py").is_file():
        parser.error(f"--before {args.before}: no p2pvpn package there (git archive main p2pvpn | tar -x -C DIR)")
    reason = require_netns()
    if reason is not None:
        print(f"latency: cannot run: {reason}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        if args.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
            for old in args.trace.glob("*.trace"):
                old.unlink()
        if args.ab:
            on, off = {args.switch: True}, {args.switch: False}
            if args.before is not None:  # this tree against that one, both under the launcher (an empty switch set)
                on, off = {TREE: str(REPO)}, {TREE: str(args.before.resolve())}
            variants = (off, on) if args.swap else (on, off)
            results = measure_pairs(args.count, args.rounds, args.interval, tuple(args.node_args), variants)
            after, before = results if not args.swap else results[::-1]
            res = {"after": after, "before": before,
                   "ratio": {k: _ratio(after["added_ms"][k], before["added_ms"][k]) for k in ADDED}}  # fmt: skip
        else:
            switches = ({"direct": False} if args.no_direct else {}) | ({"tun-poll": False} if args.no_tun_poll else {})
            res = measure(args.count, args.rounds, args.interval, tuple(args.node_args), args.trace, switches)
    except (BenchError, LabError, subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"latency: {exc}", file=sys.stderr)
        return 1
    res["seconds"] = round(time.monotonic() - started, 1)
    res["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    if args.ab:
        for side in ("after", "before"):
            variant = res[side]["switches"]
            on_off = "on" if variant.get(args.switch) else "off"
            label = f"code of {variant[TREE]}" if TREE in variant else f"{args.switch} {on_off}"
            print(f"{side} ({label}):")
            _print_table(res[side])
        r = res["ratio"]
        print(f"added after/before: min {r['min_ms']}, p10 {r['p10_ms']}, median {r['median_ms']}, p99 {r['p99_ms']}")
        print(f"load average after: {' '.join(f'{x:.1f}' for x in res['loadavg_after'])}")
        return 0
    _print_table(res)
    if "trace_us" in res:
        t = res["trace_us"]
        print(f"trace: {t['echoes']} echoes with every step; median µs per step:")
        for step, us in t.get("steps", {}).items():
            print(f"  {step:36} {us:8.1f}")
        print(f"  {'total':36} {t.get('total', 0):8.1f}")
    return 0


def _print_table(res: dict[str, Any]) -> None:
    print(f"{'path':8} {'n':>5} {'lost':>4} {'min':>7} {'p10':>7} {'median':>7} {'p99':>7} {'max':>7}  (ms)")
    for key in ("veth", "tunnel"):
        s = res[key]
        print(f"{key:8} {s['n']:5d} {s['lost']:4d} {s['min_ms']:7.3f} {s['p10_ms']:7.3f} {s['median_ms']:7.3f} "
              f"{s['p99_ms']:7.3f} {s['max_ms']:7.3f}")  # fmt: skip
    d = res["added_ms"]
    print(f"{'added':8} {'':5} {'':4} {d['min_ms']:7.3f} {d['p10_ms']:7.3f} {d['median_ms']:7.3f} {d['p99_ms']:7.3f}")
    if "node_cpu_us_per_echo" in res:
        print(f"both nodes' CPU per tunnel echo: {res['node_cpu_us_per_echo']:.0f} µs")


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


if __name__ == "__main__":
    sys.exit(main())
