"""Throughput and RTT of the VPN against its ceilings, in one run, per link profile.

Topology (a fresh one per profile, torn down even on failure)::

    host a  eth0 198.18.0.1/24 ───veth─── eth0 198.18.0.2/24  host b
            [tun p2v0 overlay]                [tun p2v0 overlay]

Traffic always flows a -> b. Per profile it measures, in this order:

1. ``veth``    iperf3 TCP over the plain veth: the no-VPN number;
2. ``raw``     one py-libp2p stream (TCP + Noise + yamux, bench/rawstream.py),
               counted at the receiver: the ceiling a libp2p tunnel can reach;
3. ``ping``    RTT over the veth (20 pings, 50 ms apart);
4. ``tunnel``  iperf3 TCP and ping RTT over the overlay, with ``python -m
               p2pvpn up`` running in both namespaces.

Profiles: ``unshaped`` (bare veth), ``clean`` (tbf 1gbit on both veth ends),
``lossy`` (clean + 0.5 % random drop at b's prerouting ingress on eth0, nft
priority -300, so only underlay packets are dropped, never the TUN's).

    python bench/throughput.py --profiles unshaped,clean,lossy [--seconds 10] [--json]

The ratios tunnel/raw and tunnel/no-VPN compare numbers from the same run,
which is what stays meaningful on a small, shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import signal
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

SUBNET = "198.18.0.0/24"
IFACE = "eth0"
TUN = "p2v0"
VPN_PORT = 4001
RAW_PORT = 4010
IPERF_VETH_PORT = 5201
IPERF_TUNNEL_PORT = 5202
PING_COUNT = 20
PING_INTERVAL = "0.05"
STARTUP_TIMEOUT = 60.0  # node start + handshake, bounded
CLI_TIMEOUT = 30.0
RAWSTREAM = REPO / "bench" / "rawstream.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Measurement failures we report per profile and carry on from.
MeasureError = (LabError, subprocess.SubprocessError, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class Profile:
    """How the veth between a and b is impaired."""

    name: str
    rate: str | None  # tbf on both veth ends; None = unshaped
    loss_per_mille: int  # random drop at b's ingress


PROFILES = {
    "unshaped": Profile("unshaped", None, 0),
    "clean": Profile("clean", "1gbit", 0),
    "lossy": Profile("lossy", "1gbit", 5),
}


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


# -- single measurements ------------------------------------------------------


def iperf3(client: Host, server: Host, addr: str, port: int, seconds: float) -> dict[str, Any]:
    """iperf3 TCP client -> server for ``seconds``; Mbit/s as counted by the receiver."""
    server.popen("iperf3", "-s", "-1", "-B", addr, "-p", str(port),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server.wait_listening(port)
    out = client.run(
        "iperf3", "-c", addr, "-p", str(port), "-t", f"{seconds:g}", "-J", timeout=seconds + 30
    ).stdout
    end = json.loads(out)["end"]
    return {
        "mbit_s": round(end["sum_received"]["bits_per_second"] / 1e6, 1),
        "retransmits": end["sum_sent"].get("retransmits"),
    }


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
    return result


_RTT_RE = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_LOSS_RE = re.compile(r"([\d.]+)% packet loss")


def ping(client: Host, addr: str) -> dict[str, Any]:
    """RTT of PING_COUNT pings; loss is reported, not hidden."""
    out = client.run("ping", "-q", "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "1", addr,
                     check=False, timeout=30).stdout  # fmt: skip
    rtt, loss = _RTT_RE.search(out), _LOSS_RE.search(out)
    if rtt is None or loss is None:
        raise BenchError(f"ping {addr} got no reply")
    return {"avg_ms": float(rtt.group(2)), "min_ms": float(rtt.group(1)),
            "max_ms": float(rtt.group(3)), "loss_pct": float(loss.group(1))}  # fmt: skip


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


def start_vpn(a: Host, b: Host, workdir: Path, procs: list[subprocess.Popen[Any]]) -> dict[str, dict[str, Any]]:
    """Init and start both nodes (appended to ``procs``), wait until each reports the other "up".

    Returns each node's ``id --json``.
    """
    ids: dict[str, dict[str, Any]] = {}
    for host in (a, b):
        d = workdir / host.name
        _p2pvpn(host, "init", "--dir", str(d))
        ids[host.name] = json.loads(_p2pvpn(host, "id", "--dir", str(d), "--json"))
    for host, peer in ((a, b), (b, a)):
        with open(workdir / f"{host.name}.log", "wb") as log:
            procs.append(host.popen(
                sys.executable, "-m", "p2pvpn", "up", "--dir", str(workdir / host.name),
                "--listen", f"/ip4/{host.address(IFACE)}/tcp/{VPN_PORT}",
                "--peer", f"/ip4/{peer.address(IFACE)}/tcp/{VPN_PORT}/p2p/{ids[peer.name]['peer_id']}",
                "--tun", TUN,
                stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=REPO,
            ))  # fmt: skip
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
        codes = {h.name: p.poll() for h, p in zip((a, b), procs)}
        why = "; ".join(
            f"{n} {'still starting' if codes[n] is None else f'exited ({codes[n]})'}, "
            f"{_log_tail(workdir / f'{n}.log')}"
            for n in pending
        )
        raise BenchError(f"tunnel not up (waited up to {STARTUP_TIMEOUT:g} s): {why}")
    return ids


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


# -- one profile ----------------------------------------------------------------


def _measure(results: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Store fn()'s result under ``key``, or its one-line failure."""
    try:
        results[key] = fn()
    except (BenchError, *MeasureError) as exc:
        results[key] = {"error": str(exc) or type(exc).__name__}


def run_profile(profile: Profile, seconds: float, tunnel_reason: str | None) -> dict[str, Any]:
    """Build the two-host topology for ``profile`` and take every measurement."""
    res: dict[str, Any] = {"profile": profile.name, "rate": profile.rate,
                           "loss_pct": profile.loss_per_mille / 10}  # fmt: skip
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        a, b = topo.add_host("a"), topo.add_host("b")
        _, addr_b = topo.link(a, b, SUBNET, iface_a=IFACE, iface_b=IFACE)
        if profile.rate is not None:
            a.shape(IFACE, profile.rate)
            b.shape(IFACE, profile.rate)
        if profile.loss_per_mille:
            b.add_ingress_loss(profile.loss_per_mille, iface=IFACE)
        _measure(res, "veth", lambda: iperf3(a, b, addr_b, IPERF_VETH_PORT, seconds))
        _measure(res, "raw", lambda: rawstream(a, b, addr_b, seconds))
        _measure(res, "ping_veth", lambda: ping(a, addr_b))
        if tunnel_reason is not None:
            res["tunnel"] = {"pending": tunnel_reason}
        else:
            _measure(res, "tunnel", lambda: tunnel(a, b, Path(tmp), seconds))
        if profile.loss_per_mille:
            seen, dropped = b.ingress_counters()
            res["ingress"] = {"seen": seen, "dropped": dropped}
    add_ratios(res)
    return res


def tunnel(a: Host, b: Host, workdir: Path, seconds: float) -> dict[str, Any]:
    """iperf3 and ping a -> b over the overlay, nodes started by the CLI."""
    procs: list[subprocess.Popen[Any]] = []
    try:
        ids = start_vpn(a, b, workdir, procs)
        overlay_b = ids[b.name]["ipv4"]
        out: dict[str, Any] = {"overlay_b": overlay_b}
        out.update(iperf3(a, b, overlay_b, IPERF_TUNNEL_PORT, seconds))
        out["ping"] = ping(a, overlay_b)
    finally:
        codes = stop_vpn(procs)
    out["node_exit_codes"] = codes
    return out


def add_ratios(res: dict[str, Any]) -> None:
    """Same-run ratios; absent when a number is missing."""
    t = res.get("tunnel", {}).get("mbit_s")
    raw = res.get("raw", {}).get("mbit_s")
    veth = res.get("veth", {}).get("mbit_s")
    res["tunnel_over_raw"] = round(t / raw, 3) if t and raw else None
    res["tunnel_over_veth"] = round(t / veth, 3) if t and veth else None
    res["raw_over_veth"] = round(raw / veth, 3) if raw and veth else None


# -- output ----------------------------------------------------------------------


def _num(d: dict[str, Any], *path: str, fmt: str = "{:.0f}") -> str:
    cur: Any = d
    for key in path:
        cur = cur.get(key) if isinstance(cur, dict) else None
    return fmt.format(cur) if isinstance(cur, (int, float)) else "-"


def table(results: list[dict[str, Any]]) -> str:
    head = ("profile", "no-VPN", "raw", "tunnel", "tun/raw", "tun/noVPN", "rtt veth", "rtt tun")
    rows = [head, ("", "Mbit/s", "Mbit/s", "Mbit/s", "", "", "ms", "ms")]
    notes: list[str] = []
    for r in results:
        rows.append((
            r["profile"], _num(r, "veth", "mbit_s"), _num(r, "raw", "mbit_s"),
            _num(r, "tunnel", "mbit_s"),
            _num(r, "tunnel_over_raw", fmt="{:.0%}"), _num(r, "tunnel_over_veth", fmt="{:.0%}"),
            _num(r, "ping_veth", "avg_ms", fmt="{:.3f}"), _num(r, "tunnel", "ping", "avg_ms", fmt="{:.3f}"),
        ))  # fmt: skip
        for key in ("veth", "raw", "ping_veth", "tunnel"):
            entry = r.get(key, {})
            for what in ("error", "pending"):
                if what in entry:
                    notes.append(f"{r['profile']} {key}: {what}: {entry[what]}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]  # fmt: skip
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="unshaped,clean,lossy",
                        help=f"comma-separated, from {', '.join(PROFILES)}")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput test")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--no-tunnel", action="store_true", help="skip the VPN measurements")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.profiles.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        parser.error(f"unknown profile(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PROFILES)}")
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be within 1..120")
    reason = require_netns("iperf3", "ping", "tc", "nft", "ss")
    if reason is not None:
        print(f"throughput: cannot run: {reason}", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP unwind through the Topology context managers like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    tunnel_reason = "skipped (--no-tunnel)" if args.no_tunnel else cli_available()

    results = []
    for name in names:
        if not args.json:
            print(f"[{name}] measuring ...", file=sys.stderr, flush=True)
        results.append(run_profile(PROFILES[name], args.seconds, tunnel_reason))
    meta = {
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_after": os.getloadavg(),
    }
    if args.json:
        print(json.dumps({"meta": meta, "profiles": results}, indent=2))
    else:
        print(table(results))
    failed = any("error" in r.get(k, {}) for r in results for k in ("veth", "raw", "ping_veth", "tunnel"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
