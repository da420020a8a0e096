"""Throughput, RTT, CPU and start-up time of the VPN against its ceilings, per link profile.

Topology (a fresh one per profile, torn down even on failure)::

    host a  eth0 198.18.0.1/24 ───veth─── eth0 198.18.0.2/24  host b
            [tun p2v0 overlay]                [tun p2v0 overlay]

or, for the impairment profiles, the same two hosts joined through a third
namespace running the WAN emulator (bench/wanem, see p2pvpn/lab/wan.py)::

    host a  eth0 ──veth── wa [wanem] wb ──veth── eth0  host b

Traffic always flows a -> b. Per profile it repeats ``--runs`` times (default
5), in this order:

1. ``veth``      iperf3 TCP over the underlay: the no-VPN number;
2. ``raw``       one py-libp2p stream (TCP + Noise + yamux, bench/rawstream.py),
                 counted at the receiver: the ceiling a libp2p tunnel can reach;
3. ``ping_veth`` RTT over the underlay (20 ICMP echoes from Python, 50 ms apart);
4. ``tunnel``    both nodes started (``python -m p2pvpn up``, fresh identities),
                 the time from starting them to the first answered echo over
                 the overlay (``first_ping``, echoes every 10 ms from Python),
                 iperf3 TCP over the overlay with each node's CPU seconds per
                 GiB carried (utime+stime from /proc/<pid>/stat across the
                 iperf3 run), then the overlay RTT; the nodes stop with SIGTERM.
                 The nodes run with their defaults, so the datagram path
                 (docs/protocol.md §16) carries the data once it is up: the
                 run waits for ``data_path`` "udp" (bounded) and records the
                 path seen after iperf3;
5. ``stream``    with ``--stream-baseline``: the same with ``--no-udp``, the
                 tunnel stream alone (the path before the datagram path);
6. ``off``       with ``--switch-baseline SWITCH``: the same with one switch of
                 p2pvpn.dataplane.egress off (``tun-poll``: step 1',
                 ``direct``: step 3'), and ``tunnel`` with it on; both under
                 bench/latency_trace.py, which sets it and stamps nothing;
                 ``off`` before or after ``tunnel`` in turn: the same-run
                 before/after of that change (``tunnel / switch off``).
                 With ``--before DIR`` instead: ``off`` runs the p2pvpn of
                 DIR (another checkout, e.g. ``git archive main p2pvpn | tar
                 -x -C DIR``), ``tunnel`` this one, both under the launcher.

Profiles: ``unshaped`` (bare veth), ``clean`` (tbf 1gbit on both veth ends),
``lossy`` (clean + 0.5 % random drop at b's prerouting ingress on eth0, nft
priority -300, so only underlay packets are dropped, never the TUN's),
``wanclean`` (clean through wanem with no impairment: the emulator's and
offloads-off cost alone) and ``low`` (vpn-bench's low impairment: clean
through wanem with 4 ms delay, 0.5 % loss and 1 % reordering in each
direction, as netem on both hosts' egress would do).

    python bench/throughput.py --profiles unshaped,clean,lossy,low [--runs 5]
        [--seconds 10] [--cc reno] [--stream-baseline] [--switch-baseline tun-poll] [--json] [--json-out FILE]

It prints a markdown table of min/median/max over the runs (or, with
``--json``, one JSON document with every run). The ratios tunnel/raw and
tunnel/no-VPN are taken per run, from numbers of the same run, which is what
stays meaningful on a small, shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p2pvpn.lab.topology import Host, LabError, Topology, require_netns  # noqa: E402
from p2pvpn.lab.wan import Impairment, WanLink, build_wanem  # noqa: E402

SUBNET = "198.18.0.0/24"
IFACE = "eth0"
TUN = "p2v0"
VPN_PORT = 4001
RAW_PORT = 4010
IPERF_VETH_PORT = 5201
IPERF_TUNNEL_PORT = 5202
PING_COUNT = 20
PING_INTERVAL = 0.05
FIRST_PING_INTERVAL = 0.01
STARTUP_TIMEOUT = 60.0  # node start + handshake, bounded
CLI_TIMEOUT = float(os.environ.get("P2PVPN_BENCH_CLI_TIMEOUT", "30"))  # raise it on a loaded machine
MAX_RUNS = 20
RAWSTREAM = REPO / "bench" / "rawstream.py"
TRACER = REPO / "bench" / "latency_trace.py"
SWITCHES = {"direct": "P2PVPN_DIRECT_SEND", "tun-poll": "P2PVPN_TUN_POLL", "recvmmsg": "P2PVPN_RECVMMSG"}
"""Switches a run can set in the nodes -> the variable their launcher reads ("1" on, "0" off): the egress ones
(p2pvpn.dataplane.egress) bench/latency_trace.py's, ``recvmmsg`` (p2pvpn.datagram.udp_socket) bench/datagram_switch.py's."""
SWITCH_LAUNCHER = REPO / "bench" / "datagram_switch.py"
TREE = "tree"
"""A variant's key naming the directory whose p2pvpn its nodes run (``--before``), instead of a switch."""
HOST_GRO = "host-gro"
"""The one switch of the lab, not of the nodes: GRO on both hosts' eth0 (WAN profiles), no-VPN measured both ways."""
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
BITRATE: str | None = None
"""iperf3 -b for every throughput measurement (``--bitrate``): same-rate A/Bs compare CPU per GiB, not Mbit/s."""

# Measurement failures we report per run and carry on from.
MeasureError = (LabError, subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError)


@dataclass(frozen=True)
class Profile:
    """How the underlay between a and b is impaired."""

    name: str
    rate: str | None  # tbf on both hosts' eth0; None = unshaped
    loss_per_mille: int  # random drop at b's ingress (nft)
    wan: Impairment | None = None  # through wanem, the same in both directions


# vpn-bench's "low impairment"; a reordered frame is held back by the delay
# itself, the distance netem's reorder gives it (netem sends it undelayed).
LOW = Impairment(delay_ms=4, loss_pct=0.5, reorder_pct=1, reorder_extra_ms=4)

PROFILES = {
    "unshaped": Profile("unshaped", None, 0),
    "clean": Profile("clean", "1gbit", 0),
    "lossy": Profile("lossy", "1gbit", 5),
    "wanclean": Profile("wanclean", "1gbit", 0, Impairment()),
    "low": Profile("low", "1gbit", 0, LOW),
}
DEFAULT_PROFILES = "unshaped,clean,lossy,low"


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


# -- single measurements ------------------------------------------------------


def iperf3(client: Host, server: Host, addr: str, port: int, seconds: float,
           bitrate: str | None = None, wan_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    """iperf3 TCP client -> server for ``seconds`` (at most ``bitrate``, iperf3's -b); Mbit/s and bytes received.

    ``wan_pid``: the WAN emulator's process, whose CPU seconds per GiB received are added (``wanem_cpu_s_per_gib``:
    the instrument's own cost, which shares the cores with what it measures)."""
    server.popen("iperf3", "-s", "-1", "-B", addr, "-p", str(port),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server.wait_listening(port)
    bitrate = bitrate or BITRATE
    wan0 = cpu_seconds(wan_pid) if wan_pid is not None else 0.0
    napi0 = napi_cpu_seconds()
    udp0 = {h.name: udp_errors(h) for h in (client, server)}
    idle0 = machine_idle()
    out = client.run(
        "iperf3", "-c", addr, "-p", str(port), "-t", f"{seconds:g}", "-J", *(("-b", bitrate) if bitrate else ()),
        timeout=seconds + 30,
    ).stdout
    idle1 = machine_idle()
    wan_cpu = cpu_seconds(wan_pid) - wan0 if wan_pid is not None else None
    napi_cpu = napi_cpu_seconds() - napi0
    udp1 = {h.name: udp_errors(h) for h in (client, server)}
    end = json.loads(out)["end"]
    sender = (end.get("streams") or [{}])[0].get("sender", {})
    result = {
        "mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
        "bytes": end["sum_received"]["bytes"],
        "retransmits": end["sum_sent"].get("retransmits"),
        # the inner flow as its sender's kernel saw it (tcp_info): smoothed RTT, largest cwnd
        "mean_rtt_ms": round(sender["mean_rtt"] / 1000, 2) if "mean_rtt" in sender else None,
        "max_snd_cwnd_kib": round(sender["max_snd_cwnd"] / 1024) if "max_snd_cwnd" in sender else None,
        # both cores' idle share during the run: near 0, the run was bounded by the machine's CPU
        "machine_idle": round((idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1]), 3),
        # UDP datagrams the kernel dropped at each host (RcvbufErrors, InErrors): loss the profile did not ask for
        "udp_errors": {name: [y - x for x, y in zip(udp0[name], udp1[name])] for name in udp0},
    }
    if wan_cpu is not None and result["bytes"]:
        result["wanem_cpu_s_per_gib"] = round(wan_cpu / (result["bytes"] / GIB), 2)
        result["napi_cpu_s_per_gib"] = round(napi_cpu / (result["bytes"] / GIB), 2)
    return result


def machine_idle() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of every CPU so far, from /proc/stat (a share over an interval)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values[:8])  # user nice system idle iowait irq softirq steal


def udp_errors(host: Host) -> tuple[int, int]:
    """(RcvbufErrors, InErrors) of UDP in ``host``'s namespace so far (/proc/net/snmp)."""
    lines = [line.split() for line in host.run("cat", "/proc/net/snmp").stdout.splitlines() if line.startswith("Udp:")]
    if len(lines) < 2:
        return 0, 0
    row = dict(zip(lines[0][1:], lines[1][1:]))
    return int(row.get("RcvbufErrors", 0)), int(row.get("InErrors", 0))


def napi_cpu_seconds() -> float:
    """CPU seconds of the threaded-NAPI kernel threads (``napi/...``): the hosts' receive work under
    ``--host-gro on``, which the emulator's own time no longer includes."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().startswith("napi/"):
                total += cpu_seconds(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return total


def rawstream(client: Host, server: Host, addr: str, seconds: float) -> dict[str, Any]:
    """One py-libp2p stream client -> server (bench/rawstream.py); receiver-side Mbit/s."""
    srv = server.popen(
        sys.executable, str(RAWSTREAM), "server", "--listen", f"/ip4/{addr}/tcp/{RAW_PORT}",
        "--once", "--lifetime", f"{seconds + 60:g}",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
    )  # fmt: skip
    assert srv.stdout is not None
    ready, _, _ = select.select([srv.stdout], [], [], 30.0)
    maddr = srv.stdout.readline().strip() if ready else ""
    if "/p2p/" not in maddr:
        raise BenchError("rawstream server printed no multiaddr within 30 s")
    out = client.run(
        sys.executable, str(RAWSTREAM), "client", "--peer", maddr, "--seconds", f"{seconds:g}",
        timeout=seconds + 60, env=ENV,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    srv.wait(timeout=30)  # --once: it exits after the report; the next run reuses the port
    return result


def ping(client: Host, addr: str) -> dict[str, Any]:
    """RTT of PING_COUNT ICMP echoes sent from Python (p2pvpn/lab/echo.py); loss is reported."""
    out = client.run(sys.executable, "-m", "p2pvpn.lab.echo", "rtt", addr, "--count", str(PING_COUNT),
                     "--interval", f"{PING_INTERVAL:g}", check=False, timeout=30, env=ENV, cwd=REPO).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if not result.get("received"):
        raise BenchError(f"ping {addr} got no reply")
    return result


def first_ping(client: Host, addr: str, since: float) -> dict[str, Any]:
    """Seconds from ``since`` (monotonic) to the first answered echo to ``addr``."""
    out = client.run(sys.executable, "-m", "p2pvpn.lab.echo", "first", addr, "--since", repr(since),
                     "--interval", f"{FIRST_PING_INTERVAL:g}", "--timeout", f"{STARTUP_TIMEOUT:g}",
                     check=False, timeout=STARTUP_TIMEOUT + 30, env=ENV, cwd=REPO).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if result.get("first_reply_s") is None:
        raise BenchError(f"no echo to {addr} answered within {STARTUP_TIMEOUT:g} s of starting the nodes")
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


# -- the VPN ----------------------------------------------------------------------


def cli_available() -> str | None:
    """None if ``python -m p2pvpn up`` can be used, else why not."""
    try:
        res = subprocess.run([sys.executable, "-m", "p2pvpn", "up", "--help"], capture_output=True,
                             text=True, timeout=CLI_TIMEOUT, env=ENV, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "`python -m p2pvpn up --help` timed out"
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`python -m p2pvpn up --help` failed: {last}"
    return None


def _p2pvpn(host: Host, *argv: str) -> str:
    return host.run(sys.executable, "-m", "p2pvpn", *argv, timeout=CLI_TIMEOUT, env=ENV, cwd=REPO).stdout


def _peer_up(status: dict[str, Any], peer_id: str) -> bool:
    peers = status.get("peers", [])
    entries = peers.values() if isinstance(peers, dict) else peers
    return any(p.get("state") == "up" and p.get("peer_id", peer_id) == peer_id for p in entries)


def init_nodes(a: Host, b: Host, workdir: Path) -> dict[str, dict[str, Any]]:
    """``init`` a fresh identity for each node; returns each node's ``id --json``."""
    ids: dict[str, dict[str, Any]] = {}
    for host in (a, b):
        d = workdir / host.name
        _p2pvpn(host, "init", "--dir", str(d))
        ids[host.name] = json.loads(_p2pvpn(host, "id", "--dir", str(d), "--json"))
    return ids


def start_nodes(a: Host, b: Host, workdir: Path, ids: dict[str, dict[str, Any]],
                procs: list[subprocess.Popen[Any]], extra: tuple[str, ...] = (),
                switches: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Start both nodes (appended to ``procs``), each with the other as a static peer; ``switches``: SWITCHES set
    (or TREE: the directory whose p2pvpn the nodes run, first on sys.path, the cwd too)."""
    switches = dict(switches or {})
    tree = switches.pop(TREE, None)
    env = {**ENV, **{SWITCHES[switch]: "1" if on else "0" for switch, on in switches.items()}}
    if tree is not None:
        env["PYTHONPATH"] = tree
    launcher = (str(SWITCH_LAUNCHER if "recvmmsg" in switches else TRACER),) if switches or tree else ("-m", "p2pvpn")
    for host, peer in ((a, b), (b, a)):
        with open(workdir / f"{host.name}.log", "wb") as log:
            procs.append(host.popen(
                sys.executable, *launcher, "up", "--dir", str(workdir / host.name),
                "--listen", f"/ip4/{host.address(IFACE)}/tcp/{VPN_PORT}",
                "--peer", f"/ip4/{peer.address(IFACE)}/tcp/{VPN_PORT}/p2p/{ids[peer.name]['peer_id']}",
                "--tun", TUN, *extra,
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree or REPO,
            ))  # fmt: skip


def wait_up(a: Host, b: Host, workdir: Path, ids: dict[str, dict[str, Any]],
            procs: list[subprocess.Popen[Any]]) -> None:  # fmt: skip
    """Wait until each node's ``status --json`` shows the other "up" (bounded)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = {a.name: (a, ids[b.name]["peer_id"]), b.name: (b, ids[a.name]["peer_id"])}
    for _ in range(int(STARTUP_TIMEOUT / 0.5)):
        for name, (host, peer_id) in list(pending.items()):
            res = host.run(sys.executable, "-m", "p2pvpn", "status", "--dir", str(workdir / name), "--json",
                           check=False, timeout=CLI_TIMEOUT, env=ENV, cwd=REPO)  # fmt: skip
            if res.returncode == 0 and _peer_up(json.loads(res.stdout), peer_id):
                del pending[name]
        if not pending or time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.5)
    if pending:
        raise BenchError(f"tunnel not up (waited up to {STARTUP_TIMEOUT:g} s): {_why(a, b, workdir, procs)}")


def _why(a: Host, b: Host, workdir: Path, procs: list[subprocess.Popen[Any]]) -> str:
    codes = {h.name: p.poll() for h, p in zip((a, b), procs)}
    return "; ".join(
        f"{n} {'running' if codes[n] is None else f'exited ({codes[n]})'}, {_log_tail(workdir / f'{n}.log')}"
        for n in codes
    )


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"{path.name}: no log"
    return f"{path.name}: {lines[-1] if lines else 'empty'}"


def stop_vpn(procs: list[subprocess.Popen[Any]]) -> list[int | None]:
    """SIGTERM the nodes and return their exit codes (0 = clean stop, None = hung)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=15))
        except subprocess.TimeoutExpired:
            codes.append(None)  # Topology.close() kills it
    return codes


def data_path(a: Host, workdir: Path, peer_id: str) -> dict[str, Any]:
    """a's view of b's data path (docs/protocol.md §16.9) and a's node-wide UDP drop counters."""
    status = json.loads(_p2pvpn(a, "status", "--dir", str(workdir / a.name), "--json"))
    peer = next((p for p in status.get("peers", []) if p.get("peer_id") == peer_id), {})
    return {"path": peer.get("data_path"), "udp_tx_packets": peer.get("udp_tx_packets"),
            "udp_rx_packets": peer.get("udp_rx_packets"), "udp": status.get("udp"),
            "drops_total": status.get("drops_total")}


def receive_batches(b: Host, workdir: Path) -> dict[str, Any]:
    """b's (the receiver's) UDP receive batches: datagrams per drained batch, and whether it used recvmmsg."""
    udp = json.loads(_p2pvpn(b, "status", "--dir", str(workdir / b.name), "--json")).get("udp") or {}
    batches, batched = udp.get("udp_rx_batches") or 0, udp.get("udp_rx_batched") or 0
    return {"recvmmsg": udp.get("recvmmsg"), "rx_batches": batches, "rx_batched": batched,
            "rx_per_batch": round(batched / batches, 1) if batches else None}


def wait_data_path(a: Host, workdir: Path, peer_id: str, timeout: float = 10.0) -> str | None:
    """Until a sends b's data over UDP (bounded); the path seen last."""
    path = None
    for _ in range(int(timeout / 0.5)):
        path = data_path(a, workdir, peer_id)["path"]
        if path == "udp":
            break
        time.sleep(0.5)
    return path


def tunnel(a: Host, b: Host, workdir: Path, seconds: float, extra: tuple[str, ...] = (),
           switches: dict[str, Any] | None = None, wan_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Start both nodes, time the first answered echo, then iperf3 (with CPU) and RTT over the overlay."""
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[Any]] = []
    out: dict[str, Any] = {}
    try:
        ids = init_nodes(a, b, workdir)
        overlay_b = ids[b.name]["ipv4"]
        out["overlay_b"] = overlay_b
        started = time.monotonic()
        start_nodes(a, b, workdir, ids, procs, extra, switches)
        try:
            out["first_ping"] = first_ping(a, overlay_b, started)
        except BenchError as exc:
            raise BenchError(f"{exc}: {_why(a, b, workdir, procs)}") from exc
        wait_up(a, b, workdir, ids, procs)
        if "--no-udp" not in extra:
            out["path_before"] = wait_data_path(a, workdir, ids[b.name]["peer_id"])
        before = [cpu_seconds(p.pid) for p in procs]
        out.update(iperf3(a, b, overlay_b, IPERF_TUNNEL_PORT, seconds, wan_pid=wan_pid))
        after = [cpu_seconds(p.pid) for p in procs]
        gib = out["bytes"] / GIB
        out["cpu_s"] = {h.name: round(y - x, 2) for h, x, y in zip((a, b), before, after)}
        out["cpu_s_per_gib"] = {h.name: round((y - x) / gib, 2) if gib else None
                                for h, x, y in zip((a, b), before, after)}  # fmt: skip
        out["data_path"] = data_path(a, workdir, ids[b.name]["peer_id"])
        if "--no-udp" not in extra:
            out["udp_b"] = receive_batches(b, workdir)
        out["ping"] = ping(a, overlay_b)
    finally:
        out["node_exit_codes"] = stop_vpn(procs)
    return out


def set_host_gro(hosts: tuple[Host, ...], on: bool) -> None:
    """The hosts' eth0 in a WAN profile receive like a NIC (on) or frame by frame (off, wan.py's setting).

    p2pvpn/lab/wan.py turns every offload off on the veths to the emulator, GRO included, and a veth without
    NAPI hands each frame the emulator sends up the receiver's stack alone, inside the emulator's own send
    (a softirq at the end of each frame's transmission): one ``recvmsg`` per datagram for the node, one TCP
    input per segment for iperf3. A NIC instead polls a ring of frames and merges each flow's run (GRO).
    ``on`` gives the veth exactly that: GRO on, which gives it a NAPI ring, and threaded NAPI, so that ring is
    polled by a kernel thread with whatever frames arrived meanwhile, not once per frame (GRO alone merges
    nothing here: measured). The emulator still reads and writes single MTU frames (GRO on its own ends would
    hand it super-frames), so its impairments are unchanged; the no-VPN baseline gets the same receiver.
    """
    threaded = f"/sys/class/net/{IFACE}/threaded"  # `ip netns exec` mounts the namespace's own /sys
    for host in hosts:
        if on:  # NAPI first (GRO gives a veth its ring), then its thread
            host.run("ethtool", "-K", IFACE, "gro", "on")
            host.run("sh", "-c", f"echo 1 > {threaded}")
        else:  # the kernel refuses "0" on a veth without NAPI: only while GRO is still on
            if host.run("cat", threaded).stdout.strip() != "0":
                host.run("sh", "-c", f"echo 0 > {threaded}")
            host.run("ethtool", "-K", IFACE, "gro", "off")


# -- one profile ----------------------------------------------------------------


def _measure(results: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Store fn()'s result under ``key``, or its one-line failure."""
    try:
        results[key] = fn()
    except (BenchError, *MeasureError) as exc:
        results[key] = {"error": str(exc) or type(exc).__name__}


def run_profile(
    profile: Profile,
    seconds: float,
    runs: int,
    tunnel_reason: str | None,
    wanem: Path | None,
    progress: Callable[[str], None],
    cc: str | None = None,
    stream_baseline: bool = False,
    switch_baseline: str | None = None,
    host_gro: bool = False,
    raw: bool = True,
    before: Path | None = None,
) -> dict[str, Any]:
    """Build the two-host topology for ``profile`` and take every measurement ``runs`` times."""
    res: dict[str, Any] = {"profile": profile.name, "rate": profile.rate,
                           "loss_pct": profile.loss_per_mille / 10, "runs": []}  # fmt: skip
    if profile.wan is not None:
        res["wan"] = profile.wan.__dict__
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        a, b = topo.add_host("a"), topo.add_host("b")
        for host in (a, b):  # per namespace; a new one starts with the machine's default
            if cc is not None:
                host.run("sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")
        res["congestion_control"] = a.run("sysctl", "-n", "net.ipv4.tcp_congestion_control").stdout.strip()
        wan = None
        if profile.wan is not None:
            assert wanem is not None
            wan = WanLink(topo, a, b, wanem, SUBNET, ab=profile.wan, iface=IFACE)
            addr_b = wan.addr_b
        else:
            _, addr_b = topo.link(a, b, SUBNET, iface_a=IFACE, iface_b=IFACE)
        if profile.rate is not None:
            a.shape(IFACE, profile.rate)
            b.shape(IFACE, profile.rate)
        if profile.loss_per_mille:
            b.add_ingress_loss(profile.loss_per_mille, iface=IFACE)
        lab_switch = switch_baseline == HOST_GRO
        if lab_switch and wan is None:
            switch_baseline, lab_switch = None, False  # a plain veth keeps its GRO: nothing to switch
        if wan is not None:
            set_host_gro((a, b), host_gro)
        wan_pid = wan.proc.pid if wan is not None else None
        for i in range(runs):
            progress(f"[{profile.name}] run {i + 1}/{runs}")
            run: dict[str, Any] = {}
            if not lab_switch:
                _measure(run, "veth", lambda: iperf3(a, b, addr_b, IPERF_VETH_PORT, seconds, wan_pid=wan_pid))
            if raw:
                _measure(run, "raw", lambda: rawstream(a, b, addr_b, seconds))
            _measure(run, "ping_veth", lambda: ping(a, addr_b))
            on_off: list[tuple[str, dict[str, Any]]] = \
                [("tunnel", {switch_baseline: True}), ("off", {switch_baseline: False})] if switch_baseline else \
                [("tunnel", {TREE: str(REPO)}), ("off", {TREE: str(before)})] if before is not None else \
                [("tunnel", {})]  # fmt: skip
            for key, switches in on_off if i % 2 == 0 else on_off[::-1]:  # the same share of each position
                if lab_switch:  # the hosts' GRO set, then no-VPN and the tunnel measured under it
                    set_host_gro((a, b), switches[HOST_GRO])
                    _measure(run, "veth" if key == "tunnel" else "veth_off",
                             lambda: iperf3(a, b, addr_b, IPERF_VETH_PORT, seconds, wan_pid=wan_pid))
                    switches = {}
                if tunnel_reason is not None:
                    run[key] = {"pending": tunnel_reason}
                else:
                    _measure(run, key, lambda: tunnel(a, b, Path(tmp) / f"run{i}{key}", seconds, switches=switches,
                                                      wan_pid=wan_pid))
            if lab_switch:
                set_host_gro((a, b), host_gro)
            if tunnel_reason is None and stream_baseline:
                _measure(run, "stream", lambda: tunnel(a, b, Path(tmp) / f"run{i}s", seconds, ("--no-udp",),
                                                       wan_pid=wan_pid))
            add_ratios(run)
            res["runs"].append(run)
        if profile.loss_per_mille:
            seen, dropped = b.ingress_counters()
            res["ingress"] = {"seen": seen, "dropped": dropped}
        if wan is not None:
            _measure(res, "wanem", wan.stop)
    res["host_gro"] = host_gro if wan is not None else None
    res["switch"] = switch_baseline if before is None else f"{TREE}:{before}"
    res["summary"] = summarize(res["runs"])
    return res


def add_ratios(run: dict[str, Any]) -> None:
    """Same-run ratios; None when a number is missing."""
    t = run.get("tunnel", {}).get("mbit_s")
    raw = run.get("raw", {}).get("mbit_s")
    veth = run.get("veth", {}).get("mbit_s")
    run["tunnel_over_raw"] = round(t / raw, 3) if t and raw else None
    run["tunnel_over_veth"] = round(t / veth, 3) if t and veth else None
    run["raw_over_veth"] = round(raw / veth, 3) if raw and veth else None
    stream = run.get("stream", {}).get("mbit_s")
    run["tunnel_over_stream"] = round(t / stream, 3) if t and stream else None
    off = run.get("off", {}).get("mbit_s")
    run["tunnel_over_off"] = round(t / off, 3) if t and off else None
    veth_off = run.get("veth_off", {}).get("mbit_s") or veth  # a lab switch measures no-VPN both ways
    run["off_over_veth"] = round(off / veth_off, 3) if off and veth_off else None
    alt = run.get("veth_off", {}).get("mbit_s")
    run["veth_over_veth_off"] = round(veth / alt, 3) if veth and alt else None


# name -> path into one run's results
METRICS: dict[str, tuple[str, ...]] = {
    "veth_mbit_s": ("veth", "mbit_s"),
    "raw_mbit_s": ("raw", "mbit_s"),
    "tunnel_mbit_s": ("tunnel", "mbit_s"),
    "tunnel_over_veth": ("tunnel_over_veth",),
    "tunnel_over_raw": ("tunnel_over_raw",),
    "raw_over_veth": ("raw_over_veth",),
    "rtt_veth_ms": ("ping_veth", "avg_ms"),
    "rtt_tunnel_ms": ("tunnel", "ping", "avg_ms"),
    "stream_mbit_s": ("stream", "mbit_s"),
    "tunnel_over_stream": ("tunnel_over_stream",),
    "rtt_stream_ms": ("stream", "ping", "avg_ms"),
    "first_ping_s": ("tunnel", "first_ping", "first_reply_s"),
    "cpu_s_per_gib_a": ("tunnel", "cpu_s_per_gib", "a"),
    "cpu_s_per_gib_b": ("tunnel", "cpu_s_per_gib", "b"),
    "veth_retransmits": ("veth", "retransmits"),
    "tunnel_retransmits": ("tunnel", "retransmits"),
    "off_mbit_s": ("off", "mbit_s"),
    "off_over_veth": ("off_over_veth",),
    "tunnel_over_off": ("tunnel_over_off",),
    "cpu_s_per_gib_a_off": ("off", "cpu_s_per_gib", "a"),
    "cpu_s_per_gib_b_off": ("off", "cpu_s_per_gib", "b"),
    "off_retransmits": ("off", "retransmits"),
    "veth_off_mbit_s": ("veth_off", "mbit_s"),
    "veth_over_veth_off": ("veth_over_veth_off",),
    "wanem_cpu_s_per_gib_veth": ("veth", "wanem_cpu_s_per_gib"),
    "wanem_cpu_s_per_gib_tunnel": ("tunnel", "wanem_cpu_s_per_gib"),
    "wanem_cpu_s_per_gib_off": ("off", "wanem_cpu_s_per_gib"),
    "napi_cpu_s_per_gib_veth": ("veth", "napi_cpu_s_per_gib"),
    "napi_cpu_s_per_gib_tunnel": ("tunnel", "napi_cpu_s_per_gib"),
    "udp_rx_per_batch": ("tunnel", "udp_b", "rx_per_batch"),
    "inner_rtt_veth_ms": ("veth", "mean_rtt_ms"),
    "inner_rtt_tunnel_ms": ("tunnel", "mean_rtt_ms"),
    "inner_rtt_off_ms": ("off", "mean_rtt_ms"),
    "idle_veth": ("veth", "machine_idle"),
    "idle_tunnel": ("tunnel", "machine_idle"),
    "idle_off": ("off", "machine_idle"),
}


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """min/median/max (and how many runs had the number) of every metric."""
    out: dict[str, dict[str, float]] = {}
    for name, path in METRICS.items():
        values = [v for r in runs if isinstance(v := _get(r, path), (int, float))]
        if values:
            out[name] = {"min": min(values), "median": statistics.median(values), "max": max(values),
                         "n": len(values)}  # fmt: skip
    return out


# -- output ----------------------------------------------------------------------

COLUMNS = (  # header, metric, format
    ("no-VPN Mbit/s", "veth_mbit_s", "{:.0f}"),
    ("raw stream Mbit/s", "raw_mbit_s", "{:.0f}"),
    ("tunnel Mbit/s", "tunnel_mbit_s", "{:.0f}"),
    ("tunnel / no-VPN", "tunnel_over_veth", "{:.0%}"),
    ("tunnel / raw", "tunnel_over_raw", "{:.0%}"),
    ("stream-only Mbit/s", "stream_mbit_s", "{:.0f}"),
    ("tunnel / stream-only", "tunnel_over_stream", "{:.0%}"),
    ("RTT no-VPN ms", "rtt_veth_ms", "{:.2f}"),
    ("RTT tunnel ms", "rtt_tunnel_ms", "{:.2f}"),
    ("RTT stream-only ms", "rtt_stream_ms", "{:.2f}"),
    ("first ping s", "first_ping_s", "{:.2f}"),
    ("CPU s/GiB a", "cpu_s_per_gib_a", "{:.1f}"),
    ("CPU s/GiB b", "cpu_s_per_gib_b", "{:.1f}"),
    ("retransmits no-VPN", "veth_retransmits", "{:.0f}"),
    ("retransmits tunnel", "tunnel_retransmits", "{:.0f}"),
    ("no-VPN, switch off Mbit/s", "veth_off_mbit_s", "{:.0f}"),
    ("no-VPN on / off", "veth_over_veth_off", "{:.0%}"),
    ("switch off Mbit/s", "off_mbit_s", "{:.0f}"),
    ("switch off / no-VPN", "off_over_veth", "{:.0%}"),
    ("tunnel / switch off", "tunnel_over_off", "{:.0%}"),
    ("CPU s/GiB a, off", "cpu_s_per_gib_a_off", "{:.1f}"),
    ("CPU s/GiB b, off", "cpu_s_per_gib_b_off", "{:.1f}"),
    ("retransmits off", "off_retransmits", "{:.0f}"),
    ("wanem CPU s/GiB no-VPN", "wanem_cpu_s_per_gib_veth", "{:.1f}"),
    ("wanem CPU s/GiB tunnel", "wanem_cpu_s_per_gib_tunnel", "{:.1f}"),
    ("wanem CPU s/GiB off", "wanem_cpu_s_per_gib_off", "{:.1f}"),
    ("NAPI threads CPU s/GiB no-VPN", "napi_cpu_s_per_gib_veth", "{:.1f}"),
    ("NAPI threads CPU s/GiB tunnel", "napi_cpu_s_per_gib_tunnel", "{:.1f}"),
    ("b datagrams per receive batch", "udp_rx_per_batch", "{:.1f}"),
    ("inner TCP RTT no-VPN ms", "inner_rtt_veth_ms", "{:.2f}"),
    ("inner TCP RTT tunnel ms", "inner_rtt_tunnel_ms", "{:.2f}"),
    ("inner TCP RTT off ms", "inner_rtt_off_ms", "{:.2f}"),
    ("machine idle no-VPN", "idle_veth", "{:.0%}"),
    ("machine idle tunnel", "idle_tunnel", "{:.0%}"),
    ("machine idle off", "idle_off", "{:.0%}"),
)


def _cell(stat: dict[str, float] | None, fmt: str) -> str:
    """``median (min–max)``; ``-`` when no run had the number."""
    if not stat:
        return "-"
    med, lo, hi = (fmt.format(stat[k]) for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}–{hi})"


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table: one row per profile, median (min–max) over the runs; failures listed below."""
    lines = ["| profile | runs | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "| --- " * (len(COLUMNS) + 2) + "|"]  # fmt: skip
    notes: list[str] = []
    for r in results:
        summary = r["summary"]
        cells = [_cell(summary.get(metric), fmt) for _, metric, fmt in COLUMNS]
        lines.append(f"| {r['profile']} | {len(r['runs'])} | " + " | ".join(cells) + " |")
        for i, run in enumerate(r["runs"]):
            for key in ("veth", "veth_off", "raw", "ping_veth", "tunnel", "stream", "off"):
                for what in ("error", "pending"):
                    if what in run.get(key, {}):
                        notes.append(f"- {r['profile']} run {i + 1} {key}: {what}: {run[key][what]}")
        if "error" in r.get("wanem", {}):
            notes.append(f"- {r['profile']} wanem: {r['wanem']['error']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def _failed(results: list[dict[str, Any]]) -> bool:
    return any("error" in run.get(k, {}) for r in results for run in r["runs"]
               for k in ("veth", "veth_off", "raw", "ping_veth", "tunnel", "stream", "off")) or any("error" in r.get("wanem", {})
                                                                       for r in results)  # fmt: skip


def _allowed_cc() -> list[str]:
    try:
        return Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    except OSError:
        return []


def _document(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    meta = {
        "runs": args.runs,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_after": os.getloadavg(),
        "bitrate": args.bitrate,
        "switch": args.switch_baseline,
    }
    return {"meta": meta, "profiles": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=DEFAULT_PROFILES,
                        help=f"comma-separated, from {', '.join(PROFILES)} (default {DEFAULT_PROFILES})")  # fmt: skip
    parser.add_argument("--runs", type=int, default=5, help="repetitions per profile (default 5)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput test")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--no-tunnel", action="store_true", help="skip the VPN measurements")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw py-libp2p stream (a switch's A/B)")
    parser.add_argument("--stream-baseline", action="store_true",
                        help="also measure the tunnel with --no-udp (the stream alone) in every run")
    parser.add_argument("--switch-baseline", choices=sorted([*SWITCHES, HOST_GRO]),
                        help="measure the tunnel with this switch on, and again with it off, in every run (same-run "
                             f"A/B); {HOST_GRO}: the hosts' GRO in WAN profiles, no-VPN measured both ways too")
    parser.add_argument("--before", type=Path,
                        help="measure the tunnel again with the p2pvpn of this tree in every run (a same-run A/B of "
                             "two checkouts: 'off' is that tree)")
    parser.add_argument("--host-gro", choices=("on", "off"), default="off",
                        help="GRO on the hosts' eth0 in WAN profiles (default off: every frame reaches the stack "
                             "alone)")
    parser.add_argument("--bitrate", help="cap every iperf3 run (its -b, e.g. 200M): a same-rate A/B of CPU per GiB, "
                        "which otherwise falls as throughput rises")
    parser.add_argument("--cc", help="TCP congestion control in both hosts (default: the machine's); a namespace "
                        "may only pick one of net.ipv4.tcp_allowed_congestion_control")  # fmt: skip
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.profiles.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        parser.error(f"unknown profile(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PROFILES)}")
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be within 1..120")
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be within 1..{MAX_RUNS}")
    if args.before is not None and (args.switch_baseline or not (args.before / "p2pvpn" / "__init__.py").is_file()):
        parser.error("--before DIR: a tree with a p2pvpn package (git archive main p2pvpn | tar -x -C DIR), "
                     "not with --switch-baseline")
    if args.cc is not None and args.cc not in _allowed_cc():
        parser.error(f"--cc {args.cc!r} is not in net.ipv4.tcp_allowed_congestion_control ({' '.join(_allowed_cc())})")
    global BITRATE
    BITRATE = args.bitrate
    needs_wan = any(PROFILES[n].wan is not None for n in names)
    reason = require_netns("iperf3", "tc", "nft", "ss", *(("ethtool",) if needs_wan else ()))
    if reason is not None:
        print(f"throughput: cannot run: {reason}", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP unwind through the Topology context managers like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    tunnel_reason = "skipped (--no-tunnel)" if args.no_tunnel else cli_available()

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="p2v-wanem-") as build_dir:
        wanem = None
        if needs_wan:
            try:
                wanem = build_wanem(Path(build_dir))
            except LabError as exc:
                print(f"throughput: cannot run: {exc}", file=sys.stderr)
                return 2
        for name in names:
            profile = PROFILES[name]
            results.append(run_profile(profile, args.seconds, args.runs, tunnel_reason, wanem, progress, args.cc,
                                       args.stream_baseline, args.switch_baseline, args.host_gro == "on",
                                       not args.no_raw, args.before.resolve() if args.before else None))
            if args.json_out is not None:  # after each profile: a long run interrupted keeps what it has
                args.json_out.write_text(json.dumps(_document(args, results), indent=2) + "\n")
    doc = _document(args, results)
    print(json.dumps(doc, indent=2) if args.json else table(results))
    return 1 if _failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
