"""Soak: N nodes under constant traffic, one random ``kill -9`` and restart every few seconds.

Theory of operation
-------------------
A :class:`p2pvpn.lab.demo.Lab` puts ``--nodes`` ``p2pvpn up`` processes in
their own namespaces on one switch; each lists all the others as static
``--peer`` (a full mesh: no config key trusts anyone else)::

    n1 ─┐                         ┌─ n2      every pair: one tunnel
    n3 ─┼── switch lan (br0) ─────┼─ n4      198.18.1.0/24 underlay
    ... ┘                         └─ ...     100.64.0.0/10 overlay

1. **Traffic.** Every node's namespace runs one echo stream (this file's
   ``stream`` mode, raw ICMP built by :mod:`p2pvpn.lab.echo`): node i sends
   ``--rate`` echoes per second to each of the overlay IPv4 addresses of
   nodes i+1 and i+2 (a ring, so every node sends and answers). Each echo's
   send time (CLOCK_MONOTONIC, which every namespace shares) and RTT are
   kept; an echo without a reply within ``--echo-timeout`` seconds is lost.
2. **Churn.** Every ``--kill-every`` seconds one node drawn at random
   (``--seed``; the first ``--spare`` nodes are never drawn, so some
   processes live through the whole run and show leaks from their peers'
   churn) gets SIGKILL and is started again at once with the same
   arguments. The next kill waits until that node is back.
3. **Outage window** of a kill: from ``t_kill - echo_timeout`` (an echo sent
   just before the kill may still be in flight) to ``t_ready``, the first
   status poll (every 0.25 s) after the restart at which the restarted node
   reports every other node's tunnel "up" and every other node reports the
   restarted node "up", each state at least ``SETTLE`` s old (two nodes that
   dial each other at once briefly hold two tunnels and keep one). A node
   that exits without being killed opens a window the same way, from the
   last time it was seen running. An echo from a to b is *in an outage* if
   it was sent inside a window of a or of b (the mesh is direct: no other
   node is on its path); every other echo must be answered.
4. **Resources.** Every ``--sample-every`` seconds each node's RSS (VmRSS)
   and open fds are read from /proc. Growth is per process (a restart is a
   new process), over the samples taken once the process is ``--warmup``
   seconds old: the median of the last three samples minus the median of
   the first three.
5. **Leftovers.** At the end every node gets SIGTERM; its namespace must then
   hold no TUN and no nft table (after up to ``--kills`` kill -9s, a restarted
   node must have taken over or removed what the killed one left). After the
   lab's teardown no namespace, link, nft table, process or directory named
   with the run's prefix may exist.

The JSON report goes to ``--json`` (or stdout with ``--json -``), a short
summary to stdout. Exit status 0 when no echo was lost outside outages,
every restarted node came back, and nothing was left over; 1 otherwise;
2 for bad arguments or a machine that cannot run namespaces.

    sudo nice -n 10 python bench/soak.py --nodes 10 --duration 1800 --kill-every 30 --json soak.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.benchkit import bounded
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.lab.echo import echo_request, parse_echo_reply
from p2pvpn.lab import topology
from p2pvpn.lab.topology import LabError, require_netns

SETTLE = 1.0  # seconds a tunnel state must be old before a restarted node counts as back
POLL = 0.25  # seconds between readiness polls
STATUS_TIMEOUT = 3.0
STREAM_TARGETS = 2  # each node echoes this many ring neighbours
MAX_DURATION = 24 * 3600.0
MAX_NODES = 20


# -- the echo stream (runs inside a node's namespace) ---------------------------------------------------


def run_stream(dests: Sequence[str], rate: float, duration: float, timeout: float, out: Path) -> int:
    """Echo each of ``dests`` ``rate`` times a second for ``duration`` s; write every echo to ``out``.

    ``out`` gets ``{"dests": {dest: [[sent_monotonic, rtt_s or null, error or ""], ...]}}``.
    SIGTERM ends the stream early (the record is still written). Bounded by
    ``duration + timeout``.
    """
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    records: dict[str, list[list[Any]]] = {d: [] for d in dests}
    pending: dict[int, tuple[str, int]] = {}  # seq -> (dest, index in records[dest])
    interval = 1.0 / (rate * len(dests))
    start = time.monotonic()
    end = start + duration
    next_send = start
    seq = 0
    turn = 0
    try:
        while not stop:
            now = time.monotonic()
            if now >= end + timeout or (now >= end and not pending):
                break
            if now < end and now >= next_send:
                dest = dests[turn % len(dests)]
                turn += 1
                seq = (seq + 1) & 0xFFFF
                entry: list[Any] = [now, None, ""]
                try:
                    sock.sendto(echo_request(4, ident, seq), (dest, 0))
                    pending[seq] = (dest, len(records[dest]))
                except OSError as exc:  # no route while our own node restarts: lost, with its reason
                    entry[2] = exc.strerror or str(exc)
                records[dest].append(entry)
                next_send += interval
                if next_send < now - 1.0:  # we were descheduled for long: do not burst to catch up
                    next_send = now
            wait = max(0.0, min(next_send if now < end else end + timeout, end + timeout) - time.monotonic())
            ready, _, _ = select.select([sock], [], [], min(wait, 0.2))
            if not ready:
                continue
            for _ in range(64):  # drain, bounded
                try:
                    data, (src, _) = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                reply = parse_echo_reply(4, data)
                if reply is None or reply[0] != ident or reply[1] not in pending:
                    continue
                dest, index = pending[reply[1]]
                if src != dest:
                    continue
                del pending[reply[1]]
                entry = records[dest][index]
                entry[1] = time.monotonic() - entry[0]
    finally:
        sock.close()
    out.write_text(json.dumps({"dests": records}))
    return 0


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Window:
    """One outage of one node: a kill (or an unexpected exit) until its tunnels are all back."""

    node: str
    cause: str  # "kill" or "exited"
    t_event: float  # monotonic: SIGKILL sent, or the node was last seen running
    start: float  # t_event - echo_timeout
    t_restart: float | None = None
    t_ready: float | None = None  # None: never came back
    exit_code: int | None = None
    nft_tables_after: int | None = None
    tuns_after: int | None = None


@dataclass
class Process:
    """One incarnation of a node (a restart starts a new one) and its /proc samples."""

    node: str
    pid: int
    started: float
    ended: float | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic, rss KiB, fds)


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(RSS in KiB, open fds) of ``pid``, None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None


def ns_state(node: LabNode) -> tuple[list[str], list[str]]:
    """(TUN names, nft table names) inside ``node``'s namespace."""
    links = json.loads(node.host.run("ip", "-j", "link", "show", "type", "tun").stdout or "[]")
    tuns = [link["ifname"] for link in links]
    out = node.host.run("nft", "-j", "list", "tables", check=False).stdout
    tables = [t["table"]["name"] for t in json.loads(out or '{"nftables": []}')["nftables"] if "table" in t]
    return tuns, tables


LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): ")


def census(nodes: Sequence[LabNode]) -> dict[str, Any]:
    """Lines of every node's log (all its processes): by level, by logger at warning+, and lines in another format."""
    levels: Counter[str] = Counter()
    loud: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    other: list[str] = []
    lines = 0
    for node in nodes:
        try:
            text = node.log_path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            lines += 1
            m = LOG_LINE_RE.match(line)
            if m is None:
                if len(other) < 2000:
                    other.append(f"{node.name}: {line[:200]}")
                continue
            levels[m.group(1)] += 1
            if m.group(1) in ("WARNING", "ERROR", "CRITICAL"):
                loud[m.group(2)] += 1
                texts[f"{m.group(1)} {m.group(2)}: {re.sub(r'[0-9A-Za-z]{40,}', '<id>', line[m.end():])[:70]}"] += 1
    return {"lines": lines, "by_level": dict(levels), "warning_or_worse_by_logger": dict(loud.most_common(15)),
            "warning_or_worse_top": dict(texts.most_common(15)),
            "other_format": len(other), "other_format_examples": other[:10]}  # fmt: skip


def leftovers(prefix: str, workdir: Path) -> list[str]:
    """Everything named with ``prefix`` that still exists on this machine (root namespace and /proc)."""
    return topology.leftovers(prefix, [workdir])


class Soak:
    """One soak run: build, traffic, churn, samples, teardown; :meth:`report` gives the JSON."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.windows: list[Window] = []
        self.processes: list[Process] = []
        self.failures: list[str] = []
        self.streams: dict[str, subprocess.Popen[bytes]] = {}
        self.stream_files: dict[str, Path] = {}
        self.stream_data: dict[str, dict[str, list[list[Any]]]] = {}
        self.targets: dict[str, list[str]] = {}  # node -> names of the nodes it echoes
        self.t0 = 0.0
        self.baseline: dict[str, tuple[int, int]] = {}  # node -> (TUNs, nft tables) before any kill
        self.node_stop: dict[str, Any] = {}
        self.after_teardown: list[str] = []
        self.kills = 0
        self.log_census: dict[str, Any] = {}

    # -- phases

    def run(self) -> dict[str, Any]:
        args = self.args
        lab = Lab(args.nodes)
        self.prefix, workdir = lab.prefix, lab.workdir
        started_wall = time.time()
        try:
            with lab:
                lab.start(*args.node_arg)
                lab.wait_up(timeout=args.up_timeout)
                self.live = {n.name: self._track(n) for n in lab.nodes}
                for node in lab.nodes:
                    tuns, tables = ns_state(node)
                    self.baseline[node.name] = (len(tuns), len(tables))
                self.t0 = time.monotonic()
                self._start_streams(lab)
                self._churn(lab)
                self._collect_streams()
                self._stop_nodes(lab)
                self.log_census = census(lab.nodes)
                if self.args.keep_logs is not None:  # the lab's directory goes with its teardown
                    self.args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for node in lab.nodes:
                        if node.log_path.exists():
                            shutil.copyfile(node.log_path, self.args.keep_logs / f"{node.name}.log")
        except LabError as exc:
            self.failures.append(f"lab: {exc}")
        finally:
            for proc in self.streams.values():  # only if the run broke off early
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        self.after_teardown = leftovers(self.prefix, workdir)
        return self.report(started_wall)

    def _track(self, node: LabNode) -> Process:
        assert node.proc is not None
        proc = Process(node.name, node.proc.pid, time.monotonic())
        self.processes.append(proc)
        return proc

    def _start_streams(self, lab: Lab) -> None:
        args = self.args
        nodes = lab.nodes
        for i, node in enumerate(nodes):
            targets = [nodes[(i + k) % len(nodes)] for k in range(1, min(STREAM_TARGETS, len(nodes) - 1) + 1)]
            self.targets[node.name] = [t.name for t in targets]
            out = lab.workdir / f"stream-{node.name}.json"
            self.stream_files[node.name] = out
            argv = [sys.executable, str(Path(__file__).resolve()), "stream", "--out", str(out),
                    "--rate", str(args.rate), "--duration", str(args.duration),
                    "--echo-timeout", str(args.echo_timeout), *[t.ipv4 for t in targets]]  # fmt: skip
            self.streams[node.name] = node.host.popen(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.PIPE)  # fmt: skip

    def _churn(self, lab: Lab) -> None:
        """Kill, restart, wait for readiness and sample until ``--duration`` is over (bounded by it)."""
        args = self.args
        end = self.t0 + args.duration
        next_kill = self.t0 + args.kill_every
        last_kill_at = end - args.kill_every / 2  # a later kill could not show its recovery
        next_sample = self.t0
        victims = lab.nodes[args.spare:]
        recovering: tuple[LabNode, Window] | None = None
        for _ in range(int(args.duration / 0.05) + 1000):  # bounded: one pass per >= 50 ms ... until `end`
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_sample:
                self._sample()
                next_sample += args.sample_every
            for node in lab.nodes:  # exits nobody asked for
                if (recovering is None or node is not recovering[0]) and not node.running():
                    recovering = self._unexpected_exit(node, recovering)
            if recovering is not None:
                node, window = recovering
                if self._ready(lab, node):
                    self._back(node, window)
                    recovering = None
                elif now - window.t_event > args.ready_timeout:
                    self.failures.append(f"{node.name} not back {args.ready_timeout:g} s after its restart:\n"
                                         f"{node.log_tail(10)}")  # fmt: skip
                    recovering = None
            elif now >= next_kill and now < last_kill_at and victims:
                victim = self.rng.choice(victims)
                recovering = victim, self._kill(victim)
                next_kill = max(next_kill + args.kill_every, time.monotonic())
            time.sleep(POLL)
        if recovering is not None:  # the traffic is over, but the last restarted node must still come back
            node, window = recovering
            for _ in range(int(args.ready_timeout / POLL) + 1):  # bounded in count and time
                if self._ready(lab, node):
                    self._back(node, window)
                    return
                if time.monotonic() - window.t_event > args.ready_timeout:
                    break
                time.sleep(POLL)
            self.failures.append(f"{node.name} not back {args.ready_timeout:g} s after its restart:\n"
                                 f"{node.log_tail(10)}")  # fmt: skip

    @staticmethod
    def _back(node: LabNode, window: Window) -> None:
        """Close ``window`` now, and note what the restarted node's namespace holds."""
        window.t_ready = time.monotonic()
        tuns, tables = ns_state(node)
        window.tuns_after, window.nft_tables_after = len(tuns), len(tables)

    def _kill(self, node: LabNode) -> Window:
        assert node.proc is not None
        t = time.monotonic()
        node.proc.send_signal(signal.SIGKILL)  # `ip netns exec` execs: this is the node itself
        code = node.proc.wait(timeout=10)
        self.live[node.name].ended = time.monotonic()
        self.kills += 1
        window = Window(node.name, "kill", t, t - self.args.echo_timeout, exit_code=code)
        self.windows.append(window)
        node.restart()
        window.t_restart = time.monotonic()
        self.live[node.name] = self._track(node)
        return window

    def _unexpected_exit(self, node: LabNode, recovering: tuple[LabNode, Window] | None) -> Any:
        """A node exited on its own: count it, open a window from its last sample, start it again."""
        assert node.proc is not None
        proc = self.live[node.name]
        last_seen = proc.samples[-1][0] if proc.samples else proc.started
        proc.ended = time.monotonic()
        self.failures.append(f"{node.name} exited on its own ({node.proc.returncode}):\n{node.log_tail(10)}")
        window = Window(node.name, "exited", last_seen, last_seen - self.args.echo_timeout,
                        exit_code=node.proc.returncode)  # fmt: skip
        self.windows.append(window)
        node.restart()
        window.t_restart = time.monotonic()
        self.live[node.name] = self._track(node)
        # Readiness is watched for one node at a time; a second outage stays open until the end of the run.
        return recovering if recovering is not None else (node, window)

    def _ready(self, lab: Lab, node: LabNode) -> bool:
        """Whether ``node`` and every other node see their tunnel up, settled for SETTLE s."""
        settled = time.time() - SETTLE

        def up(view: dict[str, Any] | None) -> bool:
            return bool(view and view.get("state") == "up" and view.get("since", 0) <= settled)

        try:
            mine = {p["peer_id"]: p for p in node.status(timeout=STATUS_TIMEOUT)["peers"]}
            if not all(up(mine.get(o.peer_id)) for o in lab.nodes if o is not node):
                return False
            for other in lab.nodes:
                if other is not node:
                    theirs = {p["peer_id"]: p for p in other.status(timeout=STATUS_TIMEOUT)["peers"]}
                    if not up(theirs.get(node.peer_id)):
                        return False
        except (ControlError, KeyError, TypeError):
            return False
        return True

    def _sample(self) -> None:
        now = time.monotonic()
        for proc in self.live.values():
            if proc.ended is None and (sample := proc_sample(proc.pid)) is not None:
                proc.samples.append((now, *sample))

    def _collect_streams(self) -> None:
        for name, proc in self.streams.items():
            try:
                _, err = proc.communicate(timeout=self.args.echo_timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=10)
            if proc.returncode != 0:
                self.failures.append(f"echo stream of {name} exited {proc.returncode}: "
                                     f"{err.decode(errors='replace').strip()[-300:]}")  # fmt: skip
            try:  # read now: the lab's directory goes with its teardown
                self.stream_data[name] = json.loads(self.stream_files[name].read_text())["dests"]
            except (OSError, ValueError, KeyError):
                self.failures.append(f"no echo record from {name}")

    def _stop_nodes(self, lab: Lab) -> None:
        """SIGTERM every node; then its namespace must hold no TUN and no nft table."""
        for node in lab.nodes:
            code = node.stop(signal.SIGTERM, timeout=15)
            self.live[node.name].ended = time.monotonic()
            tuns, tables = ns_state(node)
            self.node_stop[node.name] = {"exit_code": code, "tuns": tuns, "nft_tables": tables}

    # -- the report

    def _traffic(self) -> dict[str, Any]:
        """Every echo classified: answered, late (after --echo-timeout), lost; inside or outside outages."""
        timeout = self.args.echo_timeout
        windows: dict[str, list[tuple[float, float]]] = {}
        for w in self.windows:
            windows.setdefault(w.node, []).append((w.start, w.t_ready if w.t_ready is not None else float("inf")))
        totals = {"inside": {"sent": 0, "answered": 0, "late": 0, "lost": 0},
                  "outside": {"sent": 0, "answered": 0, "late": 0, "lost": 0}}  # fmt: skip
        pairs = []
        examples: list[dict[str, Any]] = []
        rtts: list[float] = []
        for src, data in self.stream_data.items():
            by_ip = {ip: dst for ip, dst in zip(data, self.targets[src])}
            for ip, entries in data.items():
                dst = by_ip[ip]
                outs = sorted(windows.get(src, []) + windows.get(dst, []))
                pair = {"from": src, "to": dst, "sent": len(entries), "lost_inside": 0, "lost_outside": 0,
                        "late_outside": 0}  # fmt: skip
                for sent_at, rtt, error in entries:
                    inside = any(a <= sent_at <= b for a, b in outs)
                    bucket = totals["inside" if inside else "outside"]
                    bucket["sent"] += 1
                    if rtt is None:
                        bucket["lost"] += 1
                        pair["lost_inside" if inside else "lost_outside"] += 1
                        if not inside and len(examples) < 20:
                            examples.append({"from": src, "to": dst, "sent_s": round(sent_at - self.t0, 3),
                                             "error": error})  # fmt: skip
                    elif rtt > timeout:
                        bucket["late"] += 1
                        pair["late_outside"] += 0 if inside else 1
                    else:
                        bucket["answered"] += 1
                        if not inside:
                            rtts.append(rtt * 1000)
                pairs.append(pair)
        rtts.sort()
        rtt_ms = {}
        if rtts:
            rtt_ms = {"median": round(rtts[len(rtts) // 2], 3), "p99": round(rtts[int(len(rtts) * 0.99)], 3),
                      "max": round(rtts[-1], 3)}  # fmt: skip
        return {"inside_outages": totals["inside"], "outside_outages": totals["outside"],
                "rtt_outside_ms": rtt_ms, "pairs": pairs, "lost_outside_examples": examples}  # fmt: skip

    def _resources(self) -> dict[str, Any]:
        """Per node: each process's RSS and fd growth once it is --warmup s old (see the module doc)."""
        warmup = self.args.warmup
        nodes: dict[str, Any] = {}
        for proc in self.processes:
            after = [s for s in proc.samples if s[0] - proc.started >= warmup]
            entry: dict[str, Any] = {"pid": proc.pid, "started_s": round(proc.started - self.t0, 1),
                                     "lived_s": round((proc.ended or time.monotonic()) - proc.started, 1),
                                     "samples": len(proc.samples)}  # fmt: skip
            if proc.samples:
                entry["rss_kib_first"], entry["fds_first"] = proc.samples[0][1], proc.samples[0][2]
                entry["rss_kib_last"], entry["fds_last"] = proc.samples[-1][1], proc.samples[-1][2]
            if len(after) >= 6:
                head, tail = after[:3], after[-3:]
                span = tail[-1][0] - head[0][0]
                entry["measured_s"] = round(span, 1)
                entry["rss_growth_kib"] = int(statistics.median(s[1] for s in tail) - statistics.median(s[1] for s in head))
                entry["fd_growth"] = int(statistics.median(s[2] for s in tail) - statistics.median(s[2] for s in head))
                if span > 0:
                    slope = statistics.linear_regression([s[0] for s in after], [s[1] for s in after]).slope
                    entry["rss_kib_per_min"] = round(slope * 60, 2)
                step = max(1, int(60 / self.args.sample_every))  # about one point a minute
                entry["series"] = [[round(s[0] - proc.started), s[1], s[2]] for s in after[::step]]
            node = nodes.setdefault(proc.node, {"processes": []})
            node["processes"].append(entry)
        for node in nodes.values():
            measured = [p for p in node["processes"] if "rss_growth_kib" in p]
            node["measured_processes"] = len(measured)
            if measured:
                node["rss_growth_kib_max"] = max(p["rss_growth_kib"] for p in measured)
                node["fd_growth_max"] = max(p["fd_growth"] for p in measured)
                longest = max(measured, key=lambda p: p["measured_s"])
                node["longest"] = {k: longest.get(k) for k in ("pid", "measured_s", "rss_growth_kib", "fd_growth",
                                                                "rss_kib_per_min")}  # fmt: skip
        return {"warmup_s": warmup, "sample_every_s": self.args.sample_every, "nodes": nodes}

    def report(self, started_wall: float) -> dict[str, Any]:
        args = self.args
        traffic = self._traffic()
        kills = []
        for w in self.windows:
            kills.append({
                "node": w.node, "cause": w.cause, "at_s": round(w.t_event - self.t0, 3),
                "window_s": [round(w.start - self.t0, 3), round(w.t_ready - self.t0, 3) if w.t_ready else None],
                "back_after_s": round(w.t_ready - w.t_event, 3) if w.t_ready else None,
                "exit_code": w.exit_code,
                "stale_after_restart": _stale(w, self.baseline.get(w.node)),
            })  # fmt: skip
        backs = sorted(k["back_after_s"] for k in kills if k["back_after_s"] is not None)
        stop_left = {n: s for n, s in self.node_stop.items() if s["tuns"] or s["nft_tables"]}
        stale = [k for k in kills if k["stale_after_restart"]]
        resources = self._resources()
        growth = {n: (v.get("rss_growth_kib_max"), v.get("fd_growth_max")) for n, v in resources["nodes"].items()}
        ok = (not self.failures and traffic["outside_outages"]["lost"] == 0 and not stop_left
              and not self.after_teardown and all(k["back_after_s"] is not None for k in kills))  # fmt: skip
        return {
            "config": {"nodes": args.nodes, "duration_s": args.duration, "kill_every_s": args.kill_every,
                       "spare": args.spare, "rate_per_dest": args.rate, "echo_timeout_s": args.echo_timeout,
                       "warmup_s": args.warmup, "seed": args.seed, "node_args": list(args.node_arg),
                       "settle_s": SETTLE},  # fmt: skip
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "prefix": self.prefix,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
            "elapsed_s": round(time.time() - started_wall, 1),
            "kills": kills,
            "recovery_s": {"count": len(backs), "median": backs[len(backs) // 2] if backs else None,
                           "max": backs[-1] if backs else None},  # fmt: skip
            "traffic": traffic,
            "resources": resources,
            "growth_summary": {n: {"rss_kib": r, "fds": f} for n, (r, f) in growth.items()},
            "leftovers": {"after_node_stop": stop_left, "node_stop": self.node_stop,
                          "stale_after_restart": len(stale), "after_teardown": self.after_teardown},  # fmt: skip
            "logs": self.log_census,
            "failures": self.failures,
            "ok": ok,
        }


def _stale(w: Window, base: tuple[int, int] | None) -> list[str]:
    """What a restarted node's namespace holds beyond what it held before any kill."""
    if base is None or w.t_ready is None:
        return []
    out = []
    if w.tuns_after is not None and w.tuns_after > base[0]:
        out.append(f"{w.tuns_after - base[0]} extra TUN(s)")
    if w.nft_tables_after is not None and w.nft_tables_after > base[1]:
        out.append(f"{w.nft_tables_after - base[1]} extra nft table(s)")
    return out


def summary(rep: dict[str, Any]) -> str:
    """A few lines for a human."""
    cfg, t = rep["config"], rep["traffic"]
    out, ins = t["outside_outages"], t["inside_outages"]
    lines = [
        f"soak: {cfg['nodes']} nodes, {cfg['duration_s']:g} s, kill -9 every {cfg['kill_every_s']:g} s "
        f"({len(rep['kills'])} outages), {cfg['rate_per_dest']:g} echoes/s per pair",
        f"echoes outside outages: {out['sent']} sent, {out['lost']} lost, {out['late']} late "
        f"(> {cfg['echo_timeout_s']:g} s); RTT median {t['rtt_outside_ms'].get('median')} ms, "
        f"p99 {t['rtt_outside_ms'].get('p99')} ms",
        f"echoes inside outages: {ins['sent']} sent, {ins['lost']} lost",
        f"back after a kill (all tunnels up both ways): median {rep['recovery_s']['median']} s, "
        f"max {rep['recovery_s']['max']} s",
    ]
    for name, node in sorted(rep["resources"]["nodes"].items()):
        if "longest" in node:
            lg = node["longest"]
            lines.append(f"  {name}: {len(node['processes'])} processes; longest measured {lg['measured_s']:g} s "
                         f"after warm-up: RSS {lg['rss_growth_kib']:+d} KiB ({lg['rss_kib_per_min']} KiB/min), "
                         f"fds {lg['fd_growth']:+d}; "
                         f"max over processes: RSS {node['rss_growth_kib_max']:+d} KiB, fds {node['fd_growth_max']:+d}")
        else:
            lines.append(f"  {name}: {len(node['processes'])} processes, none lived past the warm-up")
    logs = rep.get("logs") or {}
    if logs:
        lines.append(f"node logs: {logs['lines']} lines {logs['by_level']}, {logs['other_format']} in another format")
    left = rep["leftovers"]
    lines.append(f"leftovers: {len(left['after_node_stop'])} namespaces with a TUN/nft table after SIGTERM, "
                 f"{left['stale_after_restart']} restarts with stale state, {len(left['after_teardown'])} after teardown")
    for failure in rep["failures"]:
        lines.append(f"FAILURE: {failure.splitlines()[0]}")
    lines.append("OK" if rep["ok"] else "NOT OK")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_stream = sub.add_parser("stream", help="(internal) the echo stream run inside a namespace")
    p_stream.add_argument("dests", nargs="+")
    p_stream.add_argument("--out", type=Path, required=True)
    p_stream.add_argument("--rate", type=bounded(float, 0.1, 1000), default=5.0)
    p_stream.add_argument("--duration", type=bounded(float, 1, MAX_DURATION), required=True)
    p_stream.add_argument("--echo-timeout", type=bounded(float, 0.1, 60), default=2.0)
    parser.add_argument("--nodes", type=bounded(int, 2, MAX_NODES), default=10)
    parser.add_argument("--duration", type=bounded(float, 10, MAX_DURATION), default=1800.0, help="seconds of traffic and churn")
    parser.add_argument("--kill-every", type=bounded(float, 2, 3600), default=30.0, help="seconds between kills")
    parser.add_argument("--spare", type=bounded(int, 0, MAX_NODES), default=2, help="the first N nodes are never killed")
    parser.add_argument("--rate", type=bounded(float, 0.1, 100), default=5.0, help="echoes per second from each node to each of its 2 targets")
    parser.add_argument("--echo-timeout", type=bounded(float, 0.1, 60), default=2.0, help="an echo without reply after this is lost")
    parser.add_argument("--warmup", type=bounded(float, 0, MAX_DURATION), default=300.0, help="resource growth counts from this process age on")
    parser.add_argument("--sample-every", type=bounded(float, 0.5, 600), default=10.0, help="seconds between RSS/fd samples")
    parser.add_argument("--ready-timeout", type=bounded(float, 5, 600), default=90.0, help="a restarted node must be back within this")
    parser.add_argument("--up-timeout", type=bounded(float, 5, 600), default=180.0, help="the first full mesh must be up within this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--node-arg", action="append", default=[], help="extra argument for every `p2pvpn up` (repeatable)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every node's log into this directory")
    parser.add_argument("--json", dest="json_out", default=None, help="write the JSON report here ('-': stdout)")
    args = parser.parse_args(argv)
    if args.cmd == "stream":
        return run_stream(args.dests, args.rate, args.duration, args.echo_timeout, args.out)
    if args.spare >= args.nodes:
        parser.error("--spare must leave at least one node to kill")
    reason = require_netns()
    if reason is not None:
        print(f"bench/soak.py: cannot run here: {reason}", file=sys.stderr)
        return 2
    rep = Soak(args).run()
    text = json.dumps(rep, indent=1)
    if args.json_out == "-":
        print(text)
    elif args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(summary(rep), file=sys.stderr if args.json_out == "-" else sys.stdout)
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
