"""Scale: N ``p2pvpn up`` processes of one owned network; time to reach, idle CPU, RSS; and the 1,000-node model.

Theory of operation
-------------------
``net`` (root) builds one switch namespace (a bridge, underlay
198.18.0.0/16, no link to any host interface) and N host namespaces
plugged into it, one ``p2pvpn up`` process in each::

          switch lan: br0, 198.18.0.0/16
       ┌───────┬───────┼───────┬────── ... ──┐
       n1      n2      n3      n4           nN       n1..nB: DHT bootstrap (dht = "server")
    (owner)                                          every node: all of n1..nB but itself

1. **Membership, offline.** n1 runs ``network create``; every other node
   gets a key, a certificate from the owner's ``admit`` and a ``join CERT``
   (the CLI's own functions, called in this process: fifty interpreter
   starts less). Nobody lists a static peer; members find each other as
   the running code does (today: the DHT).
2. **Start.** All N nodes start at once (``t0``). *Start time*: until every
   node answers on its control socket and listens (``ready_s``, max over
   nodes: ``t_ready``). On 2 cores 50 interpreters importing py-libp2p
   take longer than 30 s of CPU to start, so by default the clock of the
   next step starts at ``t_ready`` (``--measure-from start`` for ``t0``).
3. **Reach**, ``--measure-after`` s (30) after ``t_ready``: M random ordered
   pairs (``--pairs``, ``--seed``). From each source's namespace one
   process (this file's ``reach`` mode, raw ICMP) sends an echo to each of
   its destinations' overlay IPv4 every ``--interval`` s until the first
   reply; *time to reach* = first reply − first echo (CLOCK_MONOTONIC,
   shared by all namespaces). No reply within ``--reach-timeout``: not
   reached.
4. **Idle**, from the end of the reach phase plus ``--settle`` s: a
   ``--idle-window`` of no traffic. *Idle CPU* per node: utime+stime from
   ``/proc/PID/stat`` over the window; *RSS*: VmRSS at its end, with
   ``smaps_rollup`` (anonymous vs file-backed). Tunnels "up" per node are
   counted from ``status``; with ``--profile-node`` one node is sampled by
   ``py-spy record`` over the window (summary in ``profile``).
5. **Leftovers.** Every node gets SIGTERM, then its namespace must hold no
   TUN and no nft table; after teardown nothing named with the run's
   prefix may exist.

``imports`` measures what a node's imports cost (RSS after each step in
a fresh interpreter). ``sim`` runs the discrete-event model of :mod:`p2pvpn.sim` (no root):
address-lookup latency, GET_VALUEs per lookup, messages per node per minute
(idle, and with lookups) and the same lookups with a fraction of the nodes
gone, from 10 to 1,000 nodes, charts into ``docs/`` with ``--charts``.

    sudo python bench/scale.py net --nodes 50 --profile-node n25 --json scale50.json
    python bench/scale.py imports
    python bench/scale.py sim --sizes 10,30,100,300,1000 --json sim.json --charts docs/

Exit status 0 when every node came up, every sampled pair was reached
and nothing was left over; 1 otherwise; 2 for bad arguments or a machine
that cannot run namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scale.py` from a checkout without an install
    sys.path.insert(0, str(REPO))

from p2pvpn.lab.benchkit import bounded  # noqa: E402  stdlib only behind it: the reach processes start fast

MAX_NODES = 50  # p2pvpn.lab.owned.OwnedLab's limit
SUBNET = "198.18.0.0/16"  # the underlay: room for every node, inside the lab range 198.18.0.0/15
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_POLL = 0.25
READY_WORKERS = 16  # control sockets asked at once while the nodes start
REACH_LEAD = 8.0  # seconds before the measurement the reach processes start (an interpreter start under load)
STOP_TIMEOUT = 60.0  # seconds for all nodes to exit after SIGTERM (then SIGKILL)


# -- the reach probe (runs inside a source node's namespace) -----------------------------------------


def run_reach(dests: Sequence[str], start_at: float, interval: float, timeout: float, out: Path) -> int:
    """Echo every one of ``dests`` every ``interval`` s from ``start_at`` (monotonic) until its first reply.

    A destination written ``IP+S`` is echoed only from ``start_at + S`` on
    (``net --stagger``); each destination gets ``timeout`` s from its own start.
    ``out`` gets ``{dest: {"first_sent": t, "replied": t or null, "sent": n, "error": ""}}``.
    Bounded by the last start + ``timeout``.
    """
    offsets = {d.partition("+")[0]: float(d.partition("+")[2] or 0) for d in dests}
    dests = list(offsets)
    from p2pvpn.lab.echo import echo_request, parse_echo_reply  # stdlib only behind it: a fast start

    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    state = {d: {"first_sent": None, "replied": None, "sent": 0, "error": ""} for d in dests}
    seq_of: dict[int, str] = {}
    time.sleep(max(0.0, start_at - time.monotonic()))
    end = start_at + max(offsets.values()) + timeout
    next_round = time.monotonic()
    seq = 0
    try:
        for _ in range(int((end - start_at) / max(interval, 0.01)) * 4 + 100):  # bounded; the clock ends it first
            now = time.monotonic()
            waiting = [d for d, s in state.items() if s["replied"] is None]
            if not waiting or now >= end:
                break
            if now >= next_round:
                for dest in [d for d in waiting if now >= start_at + offsets[d]]:
                    if now >= start_at + offsets[dest] + timeout:
                        continue  # its own bound is over: not reached
                    seq = (seq + 1) & 0xFFFF
                    entry = state[dest]
                    try:
                        sock.sendto(echo_request(4, ident, seq), (dest, 0))
                    except OSError as exc:  # no route yet: counted, and tried again next round
                        entry["error"] = exc.strerror or str(exc)
                    if entry["first_sent"] is None:
                        entry["first_sent"] = time.monotonic()
                    entry["sent"] += 1
                    seq_of[seq] = dest
                next_round += interval
            ready, _, _ = select.select([sock], [], [], max(0.0, min(next_round, end) - time.monotonic()))
            if not ready:
                continue
            for _ in range(256):  # drain, bounded
                try:
                    data, (src, _) = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                reply = parse_echo_reply(4, data)
                if reply is None or reply[0] != ident or seq_of.get(reply[1]) != src:
                    continue
                if state[src]["replied"] is None:
                    state[src]["replied"] = time.monotonic()
    finally:
        sock.close()
    out.write_text(json.dumps(state))
    return 0


# -- profiles ----------------------------------------------------------------------------------------------


def collapse(raw: str, top: int = 25) -> dict[str, Any]:
    """A py-spy ``raw`` (collapsed stacks) profile in a few lists: where the samples are.

    ``self``: the innermost frame; ``inclusive``: any frame of a p2pvpn or
    libp2p function on the stack (so "which of our loops costs what");
    ``innermost_ours``: the innermost p2pvpn frame below the entry point, else
    the outermost libp2p one (the code of ours, or the libp2p service, a
    sample belongs to). Samples waiting in epoll are counted apart: py-spy
    in ``--nonblocking`` mode does not always see that the thread sleeps.
    """
    from collections import Counter

    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.split(" (", 1)[0] + " " + _where(f) for f in stack.split(";")]
        if frames[-1].startswith("EpollIOManager.get_events "):  # trio waiting in epoll_wait: idle, not work
            waiting += n
            continue
        total += n
        own[frames[-1]] += n
        ours = [f for f in frames if "p2pvpn/" in f or "libp2p/" in f]
        for f in set(ours):
            inclusive[f] += n
        mine = [f for f in ours if "p2pvpn/" in f and not f.endswith(ENTRY_FRAMES)]
        if mine:
            tasks[mine[-1]] += n
        elif any("libp2p/" in f for f in ours):
            tasks[next(f for f in ours if "libp2p/" in f)] += n
        else:
            tasks["(trio's run loop: scheduling, timers)"] += n
    pct = (lambda c: [[k, round(100 * v / total, 1)] for k, v in c.most_common(top)]) if total else (lambda c: [])
    return {"samples": total, "epoll_wait_samples": waiting, "self_pct": pct(own), "inclusive_pct": pct(inclusive), "innermost_ours_pct": pct(tasks)}


ENTRY_FRAMES = ("(p2pvpn/__main__.py)", "(p2pvpn/cli.py)")  # on every stack: they say nothing about the work


def _where(frame: str) -> str:
    """``(file.py:line)`` of a py-spy frame, shortened to the package path."""
    inside = frame.split(" (", 1)[1].rstrip(")") if " (" in frame else ""
    for marker in ("site-packages/", "/p2pvpn/"):
        if marker in inside:
            inside = ("p2pvpn/" if marker == "/p2pvpn/" else "") + inside.split(marker, 1)[1]
            break
    return f"({inside.rsplit(':', 1)[0]})"


IMPORT_PROBE = r"""
import importlib, json, sys
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
steps = [("interpreter", rss())]
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps.append((name, rss()))
by = {}
for module in list(sys.modules):
    top = module.split(".")[0]
    by[top] = by.get(top, 0) + 1
print(json.dumps({"rss_kib": steps, "modules": len(sys.modules),
                  "modules_by_package": dict(sorted(by.items(), key=lambda kv: -kv[1])[:20])}))
"""
IMPORT_STEPS = ("trio", "cryptography.hazmat.primitives.asymmetric.ed25519", "google.protobuf", "multiaddr", "libp2p",
                "libp2p.kad_dht.kad_dht", "libp2p.transport.quic.transport", "rich", "typer", "p2pvpn.node")


def import_cost() -> dict[str, Any]:
    """What importing ``p2pvpn.node`` costs a fresh interpreter, step by step (RSS after each import).

    The steps run in this order in one child interpreter, so each figure is
    what that import added on top of the ones before it (shared
    dependencies count where they are first imported).
    """
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *IMPORT_STEPS], capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:]}
    data = json.loads(result.stdout)
    steps = data["rss_kib"]
    data["added_mib"] = {name: round((kib - steps[i - 1][1]) / 1024, 1) if i else round(kib / 1024, 1)
                         for i, (name, kib) in enumerate(steps)}  # fmt: skip
    return data


# -- /proc ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5), counted after ")"


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS and the smaps_rollup split (Anonymous, Rss, Pss, file-backed = Rss − Anonymous) in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    for line in rollup.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("Pss:", "Anonymous:"):
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def threads(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def summarize(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)], 3),
            "max": round(ordered[-1], 3), "min": round(ordered[0], 3), "n": len(ordered)}  # fmt: skip


# -- the network run -----------------------------------------------------------------------------------


def admit_offline(lab: Any, bootstraps: int, on_demand: bool = False) -> dict[str, Any]:
    """``network create`` on n1, then ``admit`` + ``join CERT`` for every other node, in this process.

    Every node's config gets ``bootstrap`` = the first ``bootstraps`` nodes
    but itself; those nodes serve the DHT from the start (``dht = "server"``).
    With ``on_demand`` every node opens tunnels on the first packet (docs/protocol.md §18).
    """
    from p2pvpn import identity
    from p2pvpn.cli_membership import admit_cmd, create_network, join_cmd, set_config
    from p2pvpn.lab.demo import PORT

    dirs = [lab.directory(h) for h in lab.hosts]
    for d in dirs:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    nid, _ = create_network(dirs[0], "scale")
    lab.network_id = nid
    peers = []
    for d in dirs:
        key = d / identity.KEY_FILE
        peers.append(str(identity.peer_id(identity.load(key) if key.exists() else identity.create(key))))
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        for i, d in enumerate(dirs[1:], start=1):
            sink.seek(0)
            sink.truncate()
            admit_cmd(peers[i], directory=dirs[0], name=lab.hosts[i].name)
            certificate = sink.getvalue().strip()
            join_cmd(certificate, directory=d, bootstrap=None)
    addrs = [f"/ip4/{a}/tcp/{PORT}/p2p/{p}" for a, p in zip(lab.addresses, peers)]
    for i, d in enumerate(dirs):
        boot = [addrs[j] for j in range(min(bootstraps, len(dirs))) if j != i]
        values: dict[str, Any] = {"bootstrap": boot} if boot else {}
        if on_demand:
            values["on_demand"] = True
        if i < bootstraps:
            values["dht"] = "server"
        if values:
            set_config(d, **values)
    return {"network_id": nid, "bootstrap": addrs[:bootstraps]}


def ns_state(host: Any) -> tuple[list[str], list[str]]:
    """(TUN names, nft table names) inside ``host``'s namespace."""
    links = json.loads(host.run("ip", "-j", "link", "show", "type", "tun").stdout or "[]")
    out = host.run("nft", "-j", "list", "tables", check=False).stdout
    tables = [t["table"]["name"] for t in json.loads(out or '{"nftables": []}')["nftables"] if "table" in t]
    return [link["ifname"] for link in links], tables


class ScaleRun:
    """One network run: build, admit, start, reach, idle, stop; :meth:`report` gives the JSON."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.failures: list[str] = []
        self.phases: dict[str, float] = {}
        self.ready: dict[str, float | None] = {}
        self.cpu_at: dict[str, dict[str, float | None]] = {}
        self.reach: list[dict[str, Any]] = []
        self.idle: dict[str, Any] = {}
        self.node_stop: dict[str, Any] = {}
        self.after_teardown: list[str] = []
        self.load: dict[str, Any] = {"before": os.getloadavg()}
        self.prefix = ""
        self.commit = _commit()  # of the code the nodes run (the checkout may move during a long run)
        self.t0 = self.t_ready = 0.0
        self.profile: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        from p2pvpn.errors import P2pvpnError
        from p2pvpn.lab.owned import OwnedLab
        from p2pvpn.lab.topology import LabError, leftovers

        args = self.args
        started_wall = time.time()
        lab = OwnedLab(args.nodes, subnet=SUBNET, routed=True)  # a bridge of 50 overflows the neighbour table
        self.prefix, workdir = lab.prefix, lab.workdir
        fulls_before = neighbour_table_fulls()
        try:
            t = time.monotonic()
            with lab:  # builds the namespaces
                self.phases["build_s"] = round(time.monotonic() - t, 2)
                t = time.monotonic()
                self.membership = admit_offline(lab, args.bootstraps, args.on_demand)
                lab.nodes = [lab._node(i) for i in range(len(lab.hosts))]
                self.phases["admit_s"] = round(time.monotonic() - t, 2)
                self._start(lab)
                self._reach(lab)
                self._idle(lab)
                self._stop(lab)
                if args.keep_logs is not None:  # the lab's directory goes with its teardown
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for node in lab.nodes:
                        if node.log_path.exists():
                            shutil.copyfile(node.log_path, args.keep_logs / f"{node.name}.log")
        except LabError as exc:
            self.failures.append(f"lab: {exc}")
        except P2pvpnError as exc:  # membership or config refused what the bench wrote: a bug here, said once
            self.failures.append(f"setup: {exc}")
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (main turns it into this): the lab is torn down all the same
            self.failures.append("interrupted")
        self.after_teardown = leftovers(self.prefix, [workdir])
        fulls = neighbour_table_fulls() - fulls_before
        self.phases["neighbour_table_fulls"] = fulls
        if fulls:  # the kernel dropped packets of some namespace (ours or another run's): not the nodes' doing
            self.failures.append(f"the kernel's IPv4 neighbour table overflowed {fulls} times during the run "
                                 "(net.ipv4.neigh.default.gc_thresh3): packets were dropped below the nodes")
        return self.report(started_wall)

    # -- phases

    def _start(self, lab: Any) -> None:
        """Start all nodes at once; poll each control socket until it listens (bounded by --up-timeout)."""
        from p2pvpn.errors import ControlError

        extra = list(self.args.node_arg)
        self.t0 = time.monotonic()
        for node in lab.nodes:
            node.start((), *extra)
        self.phases["spawn_s"] = round(time.monotonic() - self.t0, 2)
        pending = {n.name: n for n in lab.nodes}
        deadline = self.t0 + self.args.up_timeout

        def listening(node: Any) -> bool:
            try:
                return bool(node.status(timeout=2.0).get("listen"))
            except ControlError:
                return False

        with ThreadPoolExecutor(max_workers=READY_WORKERS) as pool:  # one slow socket must not delay the rest
            for _ in range(int(self.args.up_timeout / READY_POLL) + 1):  # bounded in count and time
                for name, node in list(pending.items()):
                    if not node.running():
                        self.failures.append(f"{name} exited ({node.proc.returncode}) while starting: "
                                             f"{node.log_tail(3)[-300:]}")  # fmt: skip
                        del pending[name]
                live = list(pending.values())
                for node, up in zip(live, pool.map(listening, live)):
                    if up:
                        self.ready[node.name] = round(time.monotonic() - self.t0, 3)
                        del pending[node.name]
                if not pending or time.monotonic() >= deadline:
                    break
                time.sleep(READY_POLL)
        self.t_ready = time.monotonic()
        for name in pending:
            self.ready[name] = None
            self.failures.append(f"{name} did not answer on its control socket within {self.args.up_timeout:g} s")
        self.cpu_at["ready"] = {n.name: cpu_seconds(n.proc.pid) for n in lab.nodes if n.proc}

    def _pairs(self, names: Sequence[str]) -> list[tuple[str, str]]:
        every = [(a, b) for a in names for b in names if a != b]
        return self.rng.sample(every, min(self.args.pairs, len(every)))

    def _reach(self, lab: Any) -> None:
        """M pairs, echoed from --measure-after s after t_ready (or t0) on; one reach process per source namespace."""
        args = self.args
        by_name = {n.name: n for n in lab.nodes}
        pairs = self._pairs([n.name for n in lab.nodes])
        sources: dict[str, list[str]] = {}
        offset: dict[tuple[str, str], float] = {}
        for i, (a, b) in enumerate(pairs):
            sources.setdefault(a, []).append(b)
            offset[(a, b)] = round(i * args.stagger, 3)
        start_at = (self.t_ready if args.measure_from == "ready" else self.t0) + args.measure_after
        self.phases["measure_at_s"] = round(start_at - self.t0, 2)
        time.sleep(max(0.0, start_at - REACH_LEAD - time.monotonic()))
        self.cpu_at["measure"] = {n.name: cpu_seconds(n.proc.pid) for n in lab.nodes if n.proc}
        held = self._tunnels(lab, sources)  # before the first echo: did the pair already have a tunnel?
        procs = {}
        for src, dsts in sources.items():
            out = lab.workdir / f"reach-{src}.json"
            argv = [sys.executable, str(Path(__file__).resolve()), "reach", "--out", str(out),
                    "--start-at", repr(max(start_at, time.monotonic() + 0.5)), "--interval", str(args.interval),
                    "--timeout", str(args.reach_timeout),
                    *[f"{by_name[d].ipv4}+{offset[(src, d)]}" for d in dsts]]  # fmt: skip
            procs[src] = (by_name[src].host.popen(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE), out)  # fmt: skip
        spy = None
        if args.profile_phase == "reach":  # the set-ups' CPU: from the first echo to the last pair's start + 10 s
            time.sleep(max(0.0, start_at - time.monotonic()))
            spy = self._profile_start(lab, len(pairs) * args.stagger + 10)
        budget = REACH_LEAD + args.reach_timeout + len(pairs) * args.stagger + 60
        for src, (proc, out) in procs.items():
            try:
                _, err = proc.communicate(timeout=max(1.0, start_at + budget - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=10)
            try:
                json.loads(out.read_text())
            except (OSError, ValueError):
                self.failures.append(f"reach from {src} exited {proc.returncode} without a record: "
                                     f"{err.decode(errors='replace').strip()[-200:]}")  # fmt: skip
        self._profile_end(spy)
        timelines = self._timelines(lab, sources)
        for src, (proc, out) in procs.items():
            try:
                data = json.loads(out.read_text())
            except (OSError, ValueError):
                data = {}
            for dst in sources[src]:
                entry = data.get(by_name[dst].ipv4, {})
                first, replied = entry.get("first_sent"), entry.get("replied")
                line = next((t for t in reversed(timelines.get(src, [])) if t.get("destination") == by_name[dst].ipv4
                             and first is not None and t.get("first_packet", 0) >= first - 0.5), None)
                self.reach.append({
                    "from": src, "to": dst, "sent": entry.get("sent", 0), "error": entry.get("error", ""),
                    "tunnel_before": by_name[dst].peer_id in held.get(src, set()),
                    "first_sent_s": round(first - self.t0, 3) if first else None,
                    "reach_s": round(replied - first, 3) if first and replied else None,
                    "phases": pair_phases(line, first, replied) if line is not None and first else None,
                })  # fmt: skip
        self.reach_end = time.monotonic()

    def _timelines(self, lab: Any, names: Any) -> dict[str, list[dict[str, Any]]]:
        """Each named node's on-demand set-up timelines (status ``on_demand.timelines``; empty if none)."""
        from p2pvpn.errors import ControlError

        def lines(node: Any) -> list[dict[str, Any]]:
            try:
                return list((node.status(timeout=5.0).get("on_demand") or {}).get("timelines") or [])
            except ControlError:
                return []

        nodes = [n for n in lab.nodes if n.name in names]
        with ThreadPoolExecutor(max_workers=READY_WORKERS) as pool:
            return {n.name: found for n, found in zip(nodes, pool.map(lines, nodes))}

    def _tunnels(self, lab: Any, names: Any) -> dict[str, set[str]]:
        """Peer IDs each named node reports a tunnel "up" to (empty if it does not answer)."""
        from p2pvpn.errors import ControlError

        def up(node: Any) -> set[str]:
            try:
                return {p["peer_id"] for p in node.status(timeout=3.0)["peers"] if p.get("state") == "up"}
            except ControlError:
                return set()

        nodes = [n for n in lab.nodes if n.name in names]
        with ThreadPoolExecutor(max_workers=READY_WORKERS) as pool:
            return {n.name: peers for n, peers in zip(nodes, pool.map(up, nodes))}

    def _idle(self, lab: Any) -> None:
        """CPU over a quiet window, then RSS, smaps and tunnels "up" per node."""
        from p2pvpn.errors import ControlError

        args = self.args
        time.sleep(args.settle)
        self.load["idle_start"] = os.getloadavg()
        before = {n.name: cpu_seconds(n.proc.pid) for n in lab.nodes if n.proc}
        t = time.monotonic()
        spy = self._profile_start(lab, args.idle_window) if args.profile_phase == "idle" else None
        time.sleep(args.idle_window)
        span = time.monotonic() - t
        self._profile_end(spy)
        self.load["idle_end"] = os.getloadavg()
        nodes = {}
        for node in lab.nodes:
            pid = node.proc.pid if node.proc else 0
            after = cpu_seconds(pid)
            start = before.get(node.name)
            entry: dict[str, Any] = {"pid": pid, "running": node.running(), "memory_kib": memory_kib(pid),
                                     "threads": threads(pid), "cpu_s_total": after}  # fmt: skip
            if after is not None and start is not None:
                entry["idle_cpu_pct"] = round(100 * (after - start) / span, 2)
            for phase, values in self.cpu_at.items():
                entry[f"cpu_s_at_{phase}"] = values.get(node.name)
            try:
                status = node.status(timeout=3.0)
                peers = status["peers"]
                entry["tunnels_up"] = sum(1 for p in peers if p.get("state") == "up")
                entry["peers_known"] = len(peers)
                disc, demand = status.get("discovery") or {}, status.get("on_demand") or {}
                # how lookups were answered and why records were published (absent on older nodes: None)
                entry["discovery"] = {k: disc.get(k) for k in ("routing_table", "reads", "publishes", "address_lookups")}
                entry["on_demand"] = {k: demand.get(k) for k in ("lookups", "lookup_retries", "lookup_ms_median")}
            except ControlError as exc:
                entry["status_error"] = str(exc)
            nodes[node.name] = entry
        self.idle = {"window_s": round(span, 2), "nodes": nodes}

    def _profile_start(self, lab: Any, duration: float) -> tuple[subprocess.Popen[bytes], Path] | None:
        """``py-spy record`` of one node for ``duration`` s (--profile-node, --profile-phase), if py-spy is installed."""
        name = self.args.profile_node
        if name is None:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        node = next((n for n in lab.nodes if n.name == name), None)
        if node is None or node.proc is None or not Path(spy).exists():
            self.profile = {"error": f"no node {name}" if node is None else "py-spy is not installed"}
            return None
        out = lab.workdir / "profile.raw"
        argv = [spy, "record", "--pid", str(node.proc.pid), "--duration", str(max(1, int(duration))),
                "--rate", "50", "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
        self.profile = {"node": name, "pid": node.proc.pid, "phase": self.args.profile_phase, "seconds": int(duration)}
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out

    def _profile_end(self, spy: tuple[subprocess.Popen[bytes], Path] | None) -> None:
        if spy is None:
            return
        proc, out = spy
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
        try:
            self.profile.update(collapse(out.read_text()))
        except OSError:
            self.profile["error"] = f"py-spy exited {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}"

    def _stop(self, lab: Any) -> None:
        """SIGTERM to every node at once (one at a time takes minutes at 50), then its namespace must be clean."""
        t = time.monotonic()
        for node in lab.nodes:
            if node.running():
                node.proc.send_signal(signal.SIGTERM)  # `ip netns exec` execs: this is the node itself
        for node in lab.nodes:
            proc = node.proc
            code = None
            if proc is not None:
                try:
                    code = proc.wait(timeout=max(1.0, t + STOP_TIMEOUT - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.failures.append(f"{node.name} did not exit within {STOP_TIMEOUT:g} s of SIGTERM")
                    proc.kill()
                    code = proc.wait(timeout=10)
            tuns, tables = ns_state(node.host)
            self.node_stop[node.name] = {"exit_code": code, "tuns": tuns, "nft_tables": tables}
        self.phases["stop_s"] = round(time.monotonic() - t, 2)

    # -- the report

    def report(self, started_wall: float) -> dict[str, Any]:
        args = self.args
        ready = [v for v in self.ready.values() if v is not None]
        reached = [p["reach_s"] for p in self.reach if p["reach_s"] is not None]
        nodes = self.idle.get("nodes", {})
        cpu = [n["idle_cpu_pct"] for n in nodes.values() if "idle_cpu_pct" in n]
        rss = [n["memory_kib"]["VmRSS"] / 1024 for n in nodes.values() if n.get("memory_kib")]
        anon = [n["memory_kib"].get("Anonymous", 0) / 1024 for n in nodes.values() if n.get("memory_kib")]
        tunnels = [n["tunnels_up"] for n in nodes.values() if "tunnels_up" in n]
        formation = [n["cpu_s_at_measure"] for n in nodes.values() if n.get("cpu_s_at_measure") is not None]
        stop_left = {n: s for n, s in self.node_stop.items() if s["tuns"] or s["nft_tables"]}
        up = sum(1 for n in nodes.values() if n.get("running") and "tunnels_up" in n)
        totals: dict[str, dict[str, int]] = {"reads": {}, "publishes": {}, "address_lookups": {}}
        for n in nodes.values():
            for part, counts in totals.items():
                for k, v in ((n.get("discovery") or {}).get(part) or {}).items():
                    counts[k] = counts.get(k, 0) + int(v)
        ok = (not self.failures and len(ready) == args.nodes and up == args.nodes and len(reached) == len(self.reach)
              and bool(self.reach) and not stop_left and not self.after_teardown)  # fmt: skip
        return {
            "config": {"nodes": args.nodes, "on_demand": args.on_demand, "pairs": args.pairs, "bootstraps": args.bootstraps,
                       "measure_after_s": args.measure_after, "measure_from": args.measure_from,
                       "interval_s": args.interval, "stagger_s": args.stagger,
                       "reach_timeout_s": args.reach_timeout, "settle_s": args.settle,
                       "idle_window_s": args.idle_window, "seed": args.seed, "node_args": list(args.node_arg)},
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "commit": self.commit,
            "prefix": self.prefix,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
            "elapsed_s": round(time.time() - started_wall, 1),
            "load": {k: [round(x, 2) for x in v] for k, v in self.load.items()},
            "cpus": os.cpu_count(),
            "phases": self.phases,
            "start": {"ready_s": summarize(ready), "nodes_ready": len(ready), "per_node": self.ready},
            "reach": {"sampled": len(self.reach), "reached": len(reached), "reach_s": summarize(reached),
                      "tunnel_before": sum(1 for p in self.reach if p.get("tunnel_before")),
                      "reached_without_tunnel_before": sum(1 for p in self.reach
                                                           if p["reach_s"] is not None and not p.get("tunnel_before")),
                      "within_2s": sum(1 for r in reached if r <= 2.0), "phases": phase_summary(self.reach),
                      "pairs": self.reach},
            "idle": {"window_s": self.idle.get("window_s"), "nodes_up": up, "cpu_pct": summarize(cpu),
                     "rss_mib": summarize(rss), "anon_mib": summarize(anon), "tunnels_up": summarize(tunnels),
                     "cpu_s_until_measure": summarize(formation), "nodes": nodes},
            "discovery_totals": totals,  # summed over the nodes, read at the idle window's end
            "leftovers": {"after_node_stop": stop_left, "after_teardown": self.after_teardown},
            "profile": self.profile,
            "failures": self.failures,
            "ok": ok,
        }


def pair_phases(line: dict[str, Any], first: float, replied: float | None) -> dict[str, Any]:
    """Where a pair's time to reach went, from its source's set-up timeline (p2pvpn.session.ondemand.SetupTimelines).

    All times CLOCK_MONOTONIC, so the probe's ``first`` echo and the node's
    steps line up. Seconds: ``to_node`` first echo -> the node saw it;
    ``lookup`` -> the address lookup ended; ``to_dial`` -> the dial started
    (the queue, the smaller-ID-first wait); ``connect`` -> connection, Noise,
    yamux and our stream; ``hello`` -> Hellos, tunnel up; ``to_reply`` ->
    the first echo reply. A step that did not happen is None; ``attempts``:
    each lookup attempt's seconds, what it found and its GET_VALUEs.
    """
    def at(step: str) -> float | None:
        value = line.get(step)
        return float(value) if isinstance(value, (int, float)) else None

    steps = [("to_node", first, at("first_packet")), ("lookup", at("first_packet"), at("lookup_done")),
             ("to_dial", at("lookup_done") or at("first_packet"), at("dial_started")),
             ("connect", at("dial_started"), at("connected")), ("hello", at("connected"), at("tunnel_up")),
             ("to_reply", at("tunnel_up"), replied)]
    out: dict[str, Any] = {name: round(b - a, 3) if a is not None and b is not None else None for name, a, b in steps}
    out["kind"] = line.get("kind")
    out["had_connection"] = line.get("had_connection")
    out["path"] = line.get("path")
    out["dial_error"] = line.get("dial_error")
    out["attempts"] = [{"s": round(a["end"] - a["start"], 3) if "end" in a else None, "found_by": a.get("found_by"),
                        "rpcs": a.get("rpcs"), "failed": a.get("failed"), "replies": a.get("replies")}
                       for a in line.get("attempts") or [] if isinstance(a, dict)]
    return out


PHASES = ("to_node", "lookup", "to_dial", "connect", "hello", "to_reply")


def phase_summary(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: its seconds over all pairs with a timeline, and over the pairs slower than 2 s."""
    with_line = [p for p in pairs if p.get("phases")]
    slow = [p for p in with_line if p.get("reach_s") is None or p["reach_s"] > 2.0]

    def of(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {name: summarize([p["phases"][name] for p in group if p["phases"].get(name) is not None])
                for name in PHASES}

    return {"pairs_with_timeline": len(with_line), "all": of(with_line), "slow": of(slow), "slow_pairs": len(slow)}


def neighbour_table_fulls() -> int:
    """How often the kernel's IPv4 neighbour table (one for all namespaces) was full, since boot.

    A full table drops packets before any qdisc or counter of the namespace
    sees them (only ``IpOutDiscards`` moves): a lab problem that looks like a
    node that never sends. ``/proc/net/stat/arp_cache``: one hex row per CPU,
    ``table_fulls`` the last column.
    """
    try:
        rows = Path("/proc/net/stat/arp_cache").read_text().split("\n")
    except OSError:
        return 0
    header = rows[0].split()
    if "table_fulls" not in header:
        return 0
    col = header.index("table_fulls")
    return sum(int(r.split()[col], 16) for r in rows[1:] if len(r.split()) > col)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def net_summary(rep: dict[str, Any]) -> str:
    """A few lines for a human."""
    cfg, start, reach, idle = rep["config"], rep["start"], rep["reach"], rep["idle"]

    def fmt(s: dict[str, float] | None, unit: str) -> str:
        return "n/a" if not s else f"median {s['median']:g}{unit}, p90 {s['p90']:g}{unit}, max {s['max']:g}{unit}"

    lines = [
        f"scale: {cfg['nodes']} nodes, commit {rep['commit']}, {rep['cpus']} CPUs, load {rep['load'].get('before')} "
        f"before, {rep['load'].get('idle_end')} at the end",
        f"start: {start['nodes_ready']}/{cfg['nodes']} nodes listening; ready {fmt(start['ready_s'], ' s')}",
        f"reach at t_{cfg['measure_from']}+{cfg['measure_after_s']:g} s (t0+{rep['phases'].get('measure_at_s')} s): "
        f"{reach['reached']}/{reach['sampled']} pairs reached"
        f"{' (one started every %g s)' % cfg['stagger_s'] if cfg.get('stagger_s') else ' (all started at once)'}, "
        f"{reach['within_2s']} within 2 s; {fmt(reach['reach_s'], ' s')}; {reach['tunnel_before']} pairs had a "
        f"tunnel before the first echo, {reach['reached_without_tunnel_before']} reached without one",
        f"idle ({idle['window_s']} s window): {idle['nodes_up']}/{cfg['nodes']} nodes up; CPU {fmt(idle['cpu_pct'], ' %')}",
        f"RSS {fmt(idle['rss_mib'], ' MiB')}; anonymous {fmt(idle['anon_mib'], ' MiB')}",
        f"tunnels up per node: {fmt(idle['tunnels_up'], '')}; CPU s per node until the reach phase: "
        f"{fmt(idle['cpu_s_until_measure'], ' s')}",
        f"discovery, all nodes: {rep.get('discovery_totals')}",
        *[f"phase {name}: all {fmt(reach['phases']['all'][name], ' s')}; slow {fmt(reach['phases']['slow'][name], ' s')}"
          for name in PHASES if reach.get("phases")],
        f"leftovers: {len(rep['leftovers']['after_node_stop'])} namespaces with a TUN/nft table after SIGTERM, "
        f"{len(rep['leftovers']['after_teardown'])} after teardown",
    ]
    lines += [f"FAILURE: {f.splitlines()[0]}" for f in rep["failures"][:10]]
    lines.append("OK" if rep["ok"] else "NOT OK")
    return "\n".join(lines)


def sim_charts(rep: dict[str, Any], directory: Path) -> list[Path]:
    """Four panels of a ``sim`` report into ``directory``/scale-sim.png (matplotlib, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ax_lat, ax_rpc), (ax_msgs, ax_ok) = axes
    for color, (name, rows) in enumerate(rep["results"].items()):
        ns = [r["nodes"] for r in rows]
        for case, style, label in (("find", "-", ""), ("churn", ":", f" {rep['parameters']['churn']:.0%} gone")):
            got = [r for r in rows if r.get(case) and r[case]["seconds"]]
            if not got:
                continue
            xs = [r["nodes"] for r in got]
            for q, marker, shade in (("median", "o", 0), ("p90", "x", 1), ("p99", "^", 2)):
                ax_lat.plot(xs, [r[case]["seconds"][q] * 1000 for r in got], marker + style, color=f"C{color + shade}",
                            label=f"{name}{label} {q}")  # fmt: skip
            ax_rpc.plot(xs, [r[case]["requests"]["mean"] for r in got], "o" + style, color=f"C{color}",
                        label=f"{name}{label} RPCs per lookup (mean)")  # fmt: skip
            ax_ok.plot(xs, [100 * r[case]["success"] for r in got], "o" + style, color=f"C{color}", label=f"{name}{label}")
        windowed = [r for r in rows if r.get("window")]
        if windowed:
            xs = [r["nodes"] for r in windowed]
            tags = windowed[0]["window"]["per_tag_per_min"]
            ax_msgs.plot(xs, [r["window"]["idle_per_min"]["mean"] for r in windowed], "o-", color=f"C{color}",
                         label=f"{name} idle, mean")  # fmt: skip
            ax_msgs.plot(xs, [r["window"]["idle_per_min"]["max"] for r in windowed], "x--", color=f"C{color}",
                         label=f"{name} idle, busiest node")  # fmt: skip
            rate = windowed[0]["window"]["lookup_rate_per_min"]
            ax_msgs.plot(xs, [r["window"]["total_per_min"]["mean"] for r in windowed], "s-", color=f"C{color + 1}",
                         label=f"{name} with {rate:g} lookup/node/min, mean")  # fmt: skip
            for tag, marker in (("publish", "v"), ("refresh", "d")):
                if tag in tags:
                    ax_msgs.plot(xs, [r["window"]["per_tag_per_min"][tag]["mean"] for r in windowed], marker + ":",
                                 color=f"C{color + 2 + (tag == 'refresh')}", label=f"{name} idle: {tag} part")  # fmt: skip
    ax_lat.set(title="address lookup, time to a valid record (virtual ms)", xlabel="nodes", ylabel="ms", xscale="log")
    ax_rpc.set(title="GET_VALUE requests per lookup", xlabel="nodes", xscale="log")
    ax_msgs.set(title="messages per node per minute (sent + received)", xlabel="nodes", ylabel="messages",
                xscale="log")  # fmt: skip
    ax_ok.set(title="lookups that found the record (%)", xlabel="nodes", ylabel="%", xscale="log", ylim=(0, 105))
    for ax in (ax_lat, ax_rpc, ax_msgs, ax_ok):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    params = rep["parameters"]
    fig.suptitle(f"p2pvpn discovery, discrete-event model (k={params['k']}, alpha={params['alpha']}, "
                 f"{rep['lookups']} lookups per point, seed {rep['seed']})")  # fmt: skip
    fig.tight_layout()
    path = directory / "scale-sim.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


# -- the command line ----------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes") from None
    if not sizes or any(not 2 <= s <= 20_000 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be 2..20000")
    return sizes


def _write(rep: dict[str, Any], where: str | None, text: str) -> None:
    body = json.dumps(rep, indent=1)
    if where == "-":
        print(body)
    elif where:
        Path(where).write_text(body + "\n")
    print(text, file=sys.stderr if where == "-" else sys.stdout)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_net = sub.add_parser("net", help="N `p2pvpn up` processes in namespaces (root)")
    p_net.add_argument("--nodes", type=bounded(int, 2, MAX_NODES), default=50)
    p_net.add_argument("--pairs", type=bounded(int, 1, 10_000), default=50, help="random ordered pairs to reach")
    p_net.add_argument("--bootstraps", type=bounded(int, 1, 10), default=3, help="the first B nodes bootstrap the DHT")
    p_net.add_argument("--measure-after", type=bounded(float, 0, 3600), default=30.0, help="reach is measured this long after --measure-from")
    p_net.add_argument("--measure-from", choices=("ready", "start"), default="ready", help="ready: every node listens (default); start: the nodes were started")
    p_net.add_argument("--interval", type=bounded(float, 0.01, 5), default=0.1, help="seconds between echoes to an unanswered destination")
    p_net.add_argument("--stagger", type=bounded(float, 0, 60), default=0.0,
                       help="pair i's first echo comes i*S s after the reach phase starts (0: all pairs at once)")
    p_net.add_argument("--reach-timeout", type=bounded(float, 1, 600), default=30.0, help="a pair not answered within this is not reached")
    p_net.add_argument("--settle", type=bounded(float, 0, 3600), default=10.0, help="seconds after the reach phase before the idle window")
    p_net.add_argument("--idle-window", type=bounded(float, 1, 3600), default=30.0, help="idle CPU is measured over this")
    p_net.add_argument("--up-timeout", type=bounded(float, 5, 1200), default=240.0, help="every node must listen within this")
    p_net.add_argument("--seed", type=int, default=1)
    p_net.add_argument("--on-demand", action="store_true", help="on_demand = true on every node: tunnels open on the first packet")
    p_net.add_argument("--keep-logs", type=Path, default=None, help="copy every node's log into this directory")
    p_net.add_argument("--profile-node", default=None, help="py-spy record this node (e.g. n25) over --profile-phase")
    p_net.add_argument("--profile-phase", choices=("idle", "reach"), default="idle",
                       help="idle: the idle window; reach: from the first echo to 10 s after the last pair's start")
    p_net.add_argument("--node-arg", action="append", default=[], help="extra argument for every `p2pvpn up` (repeatable)")
    p_net.add_argument("--json", dest="json_out", default=None, help="write the JSON report here ('-': stdout)")
    p_reach = sub.add_parser("reach", help="(internal) the echo probe run inside a namespace")
    p_reach.add_argument("dests", nargs="+")
    p_reach.add_argument("--out", type=Path, required=True)
    p_reach.add_argument("--start-at", type=float, required=True)
    p_reach.add_argument("--interval", type=bounded(float, 0.01, 5), default=0.1)
    p_reach.add_argument("--timeout", type=bounded(float, 1, 600), default=30.0)
    sub.add_parser("imports", help="RSS and Python allocations of importing p2pvpn.node (what every node pays)")
    p_sim = sub.add_parser("sim", help="the discrete-event model (p2pvpn/sim): 10 to 1,000 nodes")
    p_sim.add_argument("--sizes", type=_sizes, default=[10, 30, 100, 300, 1000])
    p_sim.add_argument("--strategies", default="addr-key", help="comma-separated (see p2pvpn/sim/strategies.py; addr-key: the node now)")
    p_sim.add_argument("--window", type=bounded(float, 0, 7200), default=600.0, help="virtual seconds of the steady window (0: none)")
    p_sim.add_argument("--lookup-rate", type=bounded(float, 0, 60), default=1.0, help="lookups per node per minute in the window")
    p_sim.add_argument("--churn", type=bounded(float, 0, 0.9), default=0.1, help="fraction of nodes gone in the churn case (0: none)")
    p_sim.add_argument("--lookups", type=bounded(int, 1, 100_000), default=200, help="per-key lookups measured per size")
    p_sim.add_argument("--seed", type=int, default=1)
    p_sim.add_argument("--charts", type=Path, default=None, help="write PNG charts into this directory (needs matplotlib)")
    p_sim.add_argument("--json", dest="json_out", default=None, help="write the JSON report here ('-': stdout)")
    args = parser.parse_args(argv)
    if args.cmd == "reach":
        return run_reach(args.dests, args.start_at, args.interval, args.timeout, args.out)
    if args.cmd == "imports":
        rep = import_cost()
        print(json.dumps(rep, indent=1))
        return 1 if "error" in rep else 0
    if args.cmd == "sim":
        from p2pvpn.sim import report as sim_report

        try:
            rep = sim_report.run(args.sizes, args.strategies.split(","), args.lookups, args.seed, args.window,
                                 args.lookup_rate, args.churn)
        except ValueError as exc:
            parser.error(str(exc))
        rep["command"] = shlex.join([Path(sys.executable).name, *sys.argv])
        if args.charts is not None:
            try:
                rep["charts"] = [str(p) for p in sim_charts(rep, args.charts)]
            except ImportError:
                print("bench/scale.py: --charts needs matplotlib (pip install -e '.[bench]')", file=sys.stderr)
                return 2
        _write(rep, args.json_out, sim_report.summary(rep))
        return 0
    from p2pvpn.lab.topology import require_netns

    reason = require_netns("nft")
    if reason is not None:
        print(f"bench/scale.py: cannot run here: {reason}", file=sys.stderr)
        return 2
    if args.measure_after < REACH_LEAD:
        parser.error(f"--measure-after must be at least {REACH_LEAD:g} s (the probes start that much earlier)")
    signal.signal(signal.SIGTERM, _interrupt)
    rep = ScaleRun(args).run()
    _write(rep, args.json_out, net_summary(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
