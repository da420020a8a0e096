"""NAT traversal numbers for docs/performance.md: ``python bench/nat.py [--rounds 3]`` (root).

Builds p2pvpn.lab.natlab labs (two nodes behind their own NAT routers, two
relays on a "public" switch) and measures, per round:

1. EIM/EIM lab, hole punching off on both nodes: seconds from start to the
   first TCP handshake through the tunnel (relayed), then relayed throughput
   (an unthrottled transfer checked by SHA-256).
2. Same lab, nodes restarted with hole punching on: seconds to the first
   handshake, seconds until the tunnel is direct, direct throughput. So the
   relayed and direct numbers come from the same lab, minutes apart.
3. EIM/random lab: hole punch sessions tried and succeeded (expected: none).

Every lab is torn down (namespaces, processes, directories) on the way out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from p2pvpn.lab.demo import LabNode, wait_for
from p2pvpn.lab.natlab import NatLab
from p2pvpn.lab.topology import require_netns

FAST = ("--discovery-interval", "1", "--record-ttl", "30")
PORT = 5201
SIZE = 32 << 20


def transfer(src: LabNode, dst: LabNode, size: int, timeout: float = 120.0) -> dict[str, Any]:
    """Start a receiver on ``dst`` and a sender on ``src``; the receiver's result plus the time to connect."""
    base = [sys.executable, "-m", "p2pvpn.lab.transfer"]
    receiver = dst.host.popen(*base, "recv", "--bind", "0.0.0.0", "--port", str(PORT),
                              stdout=subprocess.PIPE, text=True)
    dst.host.wait_listening(PORT)
    started = time.monotonic()
    sender = src.host.popen(*base, "send", "--to", dst.ipv4, "--port", str(PORT), "--bytes", str(size),
                            stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    first = sender.stdout.readline().strip()
    connected = time.monotonic() - started if first == "connected" else None
    out_s, _ = sender.communicate(timeout=timeout)
    out_r, _ = receiver.communicate(timeout=timeout)
    sent, got = json.loads(out_s.splitlines()[-1]), json.loads(out_r.splitlines()[-1])
    ok = sent.get("sha256") == got.get("sha256") and got.get("bytes") == size
    return {"ok": ok, "mbit": size * 8 / got["seconds"] / 1e6 if ok else 0.0, "connected": connected}


def first_handshake(lab: NatLab, started: float) -> float:
    a, b = lab.nodes
    assert wait_for(lambda: a.ping(b.ipv4, count=1, timeout=3).returncode == 0, 60), "no tunnel"
    return time.monotonic() - started


def eim_round() -> dict[str, Any]:
    with NatLab() as lab:
        a, b = lab.nodes
        lab.start_relays(*FAST)
        started = time.monotonic()
        lab.start_nodes(*FAST, "--no-hole-punch")
        relayed_first = first_handshake(lab, started)
        assert (lab.peer_view(a, b) or {}).get("path") == "relayed"
        relayed = transfer(a, b, SIZE)
        for node in lab.nodes:
            node.stop()
        started = time.monotonic()
        lab.start_nodes(*FAST)
        first = first_handshake(lab, started)
        direct_ok = wait_for(lambda: (lab.peer_view(a, b) or {}).get("path") == "direct", 30)
        until_direct = time.monotonic() - started
        direct = transfer(a, b, SIZE) if direct_ok else {"ok": False, "mbit": 0.0}
        return {
            "relayed_first_s": relayed_first, "relayed_mbit": relayed["mbit"], "first_s": first,
            "direct_s": until_direct if direct_ok else None, "direct_mbit": direct["mbit"],
        }  # fmt: skip


def random_round() -> dict[str, Any]:
    with NatLab(mapping_b="random") as lab:
        a, b = lab.nodes
        lab.start_relays(*FAST)
        started = time.monotonic()
        lab.start_nodes(*FAST)
        first = first_handshake(lab, started)

        def finished() -> int:
            punch = [n.status()["nat"]["hole_punching"] for n in lab.nodes]
            return sum(p["succeeded"] + p["failed"] for p in punch)

        wait_for(lambda: finished() >= 3, 90, poll=1.0)
        punch = [n.status()["nat"]["hole_punching"] for n in lab.nodes]
        return {"first_s": first, "sessions": sum(p["succeeded"] + p["failed"] for p in punch),
                "succeeded": sum(p["succeeded"] for p in punch),
                "path": (lab.peer_view(a, b) or {}).get("path")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = require_netns("ping", "nft")
    if reason:
        print(f"cannot run: {reason}")
        return 1
    eim = [eim_round() for _ in range(args.rounds)]
    rnd = [random_round() for _ in range(args.rounds)]

    def med(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if r[key] is not None]
        return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})" if values else "-"

    print(f"EIM/EIM, {args.rounds} rounds, median (min–max):")
    print(f"  first packet via relay (hole punching off): {med(eim, 'relayed_first_s')} s")
    print(f"  relayed throughput: {med(eim, 'relayed_mbit')} Mbit/s")
    print(f"  first packet (hole punching on): {med(eim, 'first_s')} s; direct after {med(eim, 'direct_s')} s")
    print(f"  direct throughput: {med(eim, 'direct_mbit')} Mbit/s")
    print(f"  hole punch: direct in {sum(r['direct_s'] is not None for r in eim)} of {len(eim)} labs")
    print(f"EIM/random, {args.rounds} rounds: first packet {med(rnd, 'first_s')} s; hole punch "
          f"{sum(r['succeeded'] for r in rnd)} of {sum(r['sessions'] for r in rnd)} sessions; "
          f"paths {[r['path'] for r in rnd]}")
    print(json.dumps({"eim": eim, "random": rnd}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
