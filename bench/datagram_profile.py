"""Where the node's CPU goes while iperf3 runs through the tunnel: py-spy on both nodes.

Builds a profile of bench/throughput.py (``--profile clean``: two namespaces,
veth, tbf 1 Gbit/s; ``--profile low``: the same through the WAN emulator with
4 ms delay, 0.5 % loss, 1 % reordering), starts both nodes (datagram path on, or ``--no-udp``), runs
iperf3 a -> b for ``--seconds`` and records each node with py-spy (sampling,
GIL and idle excluded). Prints the iperf3 result and, per node, the top
functions by own samples and by samples including callees.

    python bench/datagram_profile.py [--seconds 15] [--profile clean|low] [--no-udp] [--out DIR]
                                     [--bitrate 150M] [--code CHECKOUT]

``--bitrate`` caps iperf3 (its ``-b``), so two versions compared in CPU
seconds per GiB move the same packet rate (per-wake-up costs make CPU per
GiB fall as throughput rises, which would flatter the faster one);
``--code`` runs the nodes from another checkout (say, the commit before a
change) with this script, for A/B runs alternating the two.

Needs root, iperf3, tc, nft and py-spy (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import throughput as tp  # noqa: E402
from p2pvpn.lab.topology import LabError, Topology  # noqa: E402
from p2pvpn.lab.wan import WanLink, build_wanem  # noqa: E402


def top(collapsed: Path, n: int = 25) -> dict[str, list[tuple[str, float]]]:
    """Own-time and inclusive-time shares of the busiest functions in a py-spy ``raw`` (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            incl[frame] += samples
    share = lambda c: [(name, round(100 * v / total, 1)) for name, v in c.most_common(n)]  # noqa: E731
    return {"samples": total, "own_pct": share(own), "inclusive_pct": share(incl)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-udp", action="store_true", help="profile the stream path instead")
    parser.add_argument("--bitrate", help="iperf3 -b: cap the inner flow (e.g. 150M) for same-rate A/B runs")
    parser.add_argument("--code", type=Path, help="run the nodes from this p2pvpn checkout instead of this one")
    parser.add_argument("--profile", choices=("clean", "low"), default="clean",
                        help="underlay between the nodes, as in bench/throughput.py (default clean)")
    parser.add_argument("--out", type=Path, help="keep the py-spy files here")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    extra = ("--no-udp",) if args.no_udp else ()
    if not 2 <= args.seconds <= 300:
        parser.error("--seconds 2..300")
    profile = tp.PROFILES[args.profile]
    if args.code is not None:
        if not (args.code / "p2pvpn" / "__main__.py").is_file():
            parser.error(f"--code {args.code}: no p2pvpn checkout there")
        tp.REPO = args.code.resolve()  # start_nodes and the CLI calls run `python -m p2pvpn` from tp.REPO
        tp.ENV = {**tp.ENV, "PYTHONPATH": str(tp.REPO)}
    result: dict[str, object] = {"profile": profile.name, "code": str(tp.REPO), "bitrate": args.bitrate}
    with Topology() as topo, tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        a, b = topo.add_host("a"), topo.add_host("b")
        wan = None
        if profile.wan is not None:
            try:
                wanem = build_wanem(Path(tmp))
            except LabError as exc:
                print(f"datagram_profile: cannot run: {exc}", file=sys.stderr)
                return 2
            wan = WanLink(topo, a, b, wanem, tp.SUBNET, ab=profile.wan, iface=tp.IFACE)
        else:
            topo.link(a, b, tp.SUBNET, iface_a=tp.IFACE, iface_b=tp.IFACE)
        a.shape(tp.IFACE, "1gbit")
        b.shape(tp.IFACE, "1gbit")
        workdir = Path(tmp) / "nodes"
        workdir.mkdir()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ids = tp.init_nodes(a, b, workdir)
            tp.start_nodes(a, b, workdir, ids, procs, extra)
            tp.wait_up(a, b, workdir, ids, procs)
            if not args.no_udp:
                result["path_before"] = tp.wait_data_path(a, workdir, ids[b.name]["peer_id"])
            spies = [subprocess.Popen([spy, "record", "--pid", str(p.pid), "--duration", str(int(args.seconds)),
                                       "--rate", "200", "--format", "raw", "--nonblocking",
                                       "--output", str(out_dir / f"{h.name}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for h, p in zip((a, b), procs)]
            time.sleep(0.5)
            before = [tp.cpu_seconds(p.pid) for p in procs]
            result["iperf3"] = tp.iperf3(a, b, ids[b.name]["ipv4"], tp.IPERF_TUNNEL_PORT, args.seconds - 1,
                                         args.bitrate)
            after = [tp.cpu_seconds(p.pid) for p in procs]
            result["cpu_s"] = {h.name: round(y - x, 2) for h, x, y in zip((a, b), before, after)}
            gib = result["iperf3"]["bytes"] / tp.GIB  # type: ignore[index]
            result["cpu_s_per_gib"] = {h.name: round((y - x) / gib, 2) if gib else None
                                       for h, x, y in zip((a, b), before, after)}  # fmt: skip
            result["data_path"] = tp.data_path(a, workdir, ids[b.name]["peer_id"])
            result["data_path_b"] = tp.data_path(b, workdir, ids[a.name]["peer_id"])  # its udp_rx_batch*: batch size
            for spy_proc in spies:
                spy_proc.wait(timeout=args.seconds + 30)
            for h in (a, b):
                path = out_dir / f"{h.name}.txt"
                result[f"profile_{h.name}"] = top(path) if path.exists() else "no py-spy output"
        finally:
            tp.stop_vpn(procs)
            if wan is not None:
                wan.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
