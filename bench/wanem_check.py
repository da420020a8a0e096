"""The WAN emulator's own numbers: what it costs, and that each impairment shows where it should.

Each case builds a fresh pair of hosts (p2pvpn/lab/wan.py for the emulator,
a plain veth otherwise), takes its measurement and tears it down:

* ``veth``, ``veth-nooffload``, ``wanem``: iperf3 TCP a -> b with no
  impairment and no shaping, over a plain veth (offloads on, as the kernel
  sets them), a plain veth with the offloads off that wanem needs, and
  through wanem; for wanem also its CPU seconds per GiB and its counters;
* ``rate``: through wanem with ``-rate 1gbit``;
* ``delay``: RTT of 50 echoes with 4 ms one-way delay a -> b (0 back), and
  without delay;
* ``loss``: iperf3 with 1 % loss a -> b: TCP retransmits and wanem's drops;
* ``reorder``: iperf3 with 1 % of frames a -> b held back 1 ms: wanem's
  reordered count and TCP's retransmits (spurious: nothing was lost).

    python bench/wanem_check.py [--runs 3] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from throughput import ENV, GIB, IFACE, REPO, SUBNET, cpu_seconds, iperf3

from p2pvpn.lab.topology import Host, LabError, Topology, require_netns
from p2pvpn.lab.wan import Impairment, WanLink, build_wanem, offloads_off

PORT = 5201
RTT_COUNT = 50


def _plain(offloads: bool, seconds: float) -> dict[str, Any]:
    with Topology() as topo:
        a, b = topo.add_host("a"), topo.add_host("b")
        _, addr_b = topo.link(a, b, SUBNET, iface_a=IFACE, iface_b=IFACE)
        if not offloads:
            offloads_off(a, IFACE)
            offloads_off(b, IFACE)
        return iperf3(a, b, addr_b, PORT, seconds)


def _through(wanem: Path, ab: Impairment, measure: Callable[[Host, Host, str], dict[str, Any]]) -> dict[str, Any]:
    """Run ``measure(a, b, addr_b)`` through wanem (``ab`` from a to b, nothing back)."""
    with Topology() as topo:
        a, b = topo.add_host("a"), topo.add_host("b")
        wan = WanLink(topo, a, b, wanem, SUBNET, ab=ab, ba=Impairment(), iface=IFACE, seed=3)
        cpu0 = cpu_seconds(wan.proc.pid)
        out = measure(a, b, wan.addr_b)
        out["wanem_cpu_s"] = round(cpu_seconds(wan.proc.pid) - cpu0, 2)
        if out.get("bytes"):
            out["wanem_cpu_s_per_gib"] = round(out["wanem_cpu_s"] / (out["bytes"] / GIB), 2)
        counters = wan.stop()
        out["wanem"] = {k: counters[k] for k in ("forwarded", "dropped", "reordered")}
        out["wanem_a_to_b"] = counters["a_to_b"]
        return out


def cases(wanem: Path, seconds: float) -> dict[str, Callable[[], dict[str, Any]]]:
    def tcp(a: Host, b: Host, addr: str) -> dict[str, Any]:
        return iperf3(a, b, addr, PORT, seconds)

    def rtt(a: Host, b: Host, addr: str) -> dict[str, Any]:
        out = a.run(sys.executable, "-m", "p2pvpn.lab.echo", "rtt", addr, "--count", str(RTT_COUNT),
                    "--interval", "0.02", timeout=60, env=ENV, cwd=REPO).stdout  # fmt: skip
        result: dict[str, Any] = json.loads(out)
        return result

    return {
        "veth": lambda: _plain(True, seconds),
        "veth-nooffload": lambda: _plain(False, seconds),
        "wanem": lambda: _through(wanem, Impairment(), tcp),
        "rate": lambda: _through(wanem, Impairment(rate="1gbit"), tcp),
        "delay": lambda: _through(wanem, Impairment(delay_ms=4), rtt),
        "nodelay": lambda: _through(wanem, Impairment(), rtt),
        "loss": lambda: _through(wanem, Impairment(loss_pct=1), tcp),
        "reorder": lambda: _through(wanem, Impairment(reorder_pct=1, reorder_extra_ms=1), tcp),
    }


SUMMARY = {  # case -> (metric path, label)
    "veth": (("mbit_s",), "Mbit/s"),
    "veth-nooffload": (("mbit_s",), "Mbit/s"),
    "wanem": (("mbit_s",), "Mbit/s"),
    "rate": (("mbit_s",), "Mbit/s"),
    "delay": (("median_ms",), "RTT ms (median)"),
    "nodelay": (("median_ms",), "RTT ms (median)"),
    "loss": (("retransmits",), "TCP retransmits"),
    "reorder": (("wanem", "reordered"), "frames reordered"),
}


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10 or not 1 <= args.seconds <= 60:
        parser.error("--runs must be within 1..10 and --seconds within 1..60")
    reason = require_netns("iperf3", "ss", "ethtool")
    if reason is not None:
        print(f"wanem_check: cannot run: {reason}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="p2v-wanem-") as build_dir:
        try:
            wanem = build_wanem(Path(build_dir))
        except LabError as exc:
            print(f"wanem_check: cannot run: {exc}", file=sys.stderr)
            return 2
        for _ in range(args.runs):  # interleaved, so a busy minute hits every case alike
            for name, fn in cases(wanem, args.seconds).items():
                try:
                    results.setdefault(name, []).append(fn())
                except (LabError, OSError, ValueError, KeyError) as exc:
                    results.setdefault(name, []).append({"error": str(exc)})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| case | what | median (min–max) | runs |\n| --- | --- | --- | --- |")
    for name, (path, label) in SUMMARY.items():
        values = [v for r in results[name] if isinstance(v := _get(r, path), (int, float))]
        cell = (f"{statistics.median(values):g} ({min(values):g}–{max(values):g})" if values else "-")
        print(f"| {name} | {label} | {cell} | {len(values)}/{len(results[name])} |")
    cpu = [r["wanem_cpu_s_per_gib"] for r in results["wanem"] if "wanem_cpu_s_per_gib" in r]
    if cpu:
        print(f"\nwanem CPU s/GiB at full speed: median {statistics.median(cpu):g} ({min(cpu):g}–{max(cpu):g})")
    errors = [f"- {n}: {r['error']}" for n, rs in results.items() for r in rs if "error" in r]
    print("\n".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
