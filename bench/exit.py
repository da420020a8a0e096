"""Exit numbers for docs/performance.md: ``python bench/exit.py [--rounds 3]`` (root).

Builds a p2pvpn.lab.exitlab lab (client, two exits, a web host on a
simulated internet) and measures, per round, in the same lab:

1. Throughput (a 32 MiB TCP transfer checked by SHA-256) and ping RTT of
   * the direct tunnel: client -> exit1's overlay address (ends at exit1's TUN);
   * through the exit: client -> www 203.0.113.10 (tunnel, then forwarding + masquerade on exit1);
   * no VPN: exit1 -> www on the underlay (what the exit's uplink does alone).
2. Multi-hop (``--exit-via``, client -> relay -> exit1 -> www): throughput
   of an 8 MiB transfer and ping RTT, next to the same exit reached directly.
3. Failover (client with ``--use-exit auto``, both exits up): seconds from
   SIGKILL of the exit in use until a new HTTP request succeeds through the
   other one; the killed exit is restarted between rounds.

Every lab is torn down (namespaces, processes, directories) on the way out.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import wait_for
from p2pvpn.lab.exitlab import WWW_IP, WWW_PORT, ExitLab
from p2pvpn.lab.topology import Host, require_netns

FAST = ("--discovery-interval", "1", "--record-ttl", "30", "--keepalive", "1")
POLICY = ("--exit-deny", "198.18.0.0/15", "--exit-deny", "100.64.0.0/10", "--exit-deny", "[fc00::/7]")
PORT = 5201
SIZE = 32 << 20
HELLO = f"http://{WWW_IP}:{WWW_PORT}/hello.txt"
_RTT_RE = re.compile(r"= [\d.]+/([\d.]+)/")


def transfer(src: Host, dst: Host, dst_ip: str, size: int = SIZE, timeout: float = 180.0) -> float:
    """Mbit/s of a transfer from ``src`` to ``dst_ip`` (a receiver on ``dst``), checked by SHA-256."""
    base = [sys.executable, "-m", "p2pvpn.lab.transfer"]
    receiver = dst.popen(*base, "recv", "--bind", "0.0.0.0", "--port", str(PORT), stdout=subprocess.PIPE, text=True)
    dst.wait_listening(PORT)
    sender = src.popen(*base, "send", "--to", dst_ip, "--port", str(PORT), "--bytes", str(size),
                       stdout=subprocess.PIPE, text=True)
    out_s, _ = sender.communicate(timeout=timeout)
    out_r, _ = receiver.communicate(timeout=timeout)
    sent, got = json.loads(out_s.splitlines()[-1]), json.loads(out_r.splitlines()[-1])
    if sent.get("sha256") != got.get("sha256") or got.get("bytes") != size:
        raise RuntimeError(f"transfer to {dst_ip} corrupted: {sent} vs {got}")
    return float(size * 8 / got["seconds"] / 1e6)


def rtt_ms(src: Host, dest: str, count: int = 20) -> float:
    out = src.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", dest, check=False, timeout=60).stdout
    match = _RTT_RE.search(out)
    if match is None:
        raise RuntimeError(f"ping {dest} failed: {out[-200:]}")
    return float(match.group(1))


def paths_round(lab: ExitLab) -> dict[str, float]:
    exit1, _ = lab.exits
    client = lab.client
    assert client is not None and lab.www is not None
    exit1.start([client], "--exit", *POLICY, "--dht", "off", *FAST)
    client.start([exit1], "--use-exit", exit1.peer_id, "--dht", "off", *FAST)
    try:
        if not wait_for(lambda: lab.curl(HELLO, timeout=3).returncode == 0, 60, poll=0.5):
            raise RuntimeError(f"no request through the exit:\n{client.log_tail()}")
        return {
            "direct_mbit": transfer(client.host, exit1.host, exit1.ipv4),
            "exit_mbit": transfer(client.host, lab.www, WWW_IP),
            "novpn_mbit": transfer(exit1.host, lab.www, WWW_IP),
            "direct_rtt_ms": rtt_ms(client.host, exit1.ipv4),
            "exit_rtt_ms": rtt_ms(client.host, WWW_IP),
            "novpn_rtt_ms": rtt_ms(exit1.host, WWW_IP),
        }
    finally:
        client.stop()
        exit1.stop()


def multihop_round(lab: ExitLab) -> dict[str, float]:
    exit1, exit2 = lab.exits
    client, relay = lab.client, lab.relay
    assert client is not None and relay is not None and lab.www is not None
    lab.start_relay(*FAST[:4])
    exit1.start((), "--exit", *POLICY, *lab.bootstrap_args(), *FAST)
    client.start((), "--use-exit", exit1.peer_id, "--exit-via", relay.peer_id, *lab.bootstrap_args(), *FAST)
    if not wait_for(lambda: lab.curl(HELLO, timeout=3).returncode == 0, 90, poll=0.5):
        raise RuntimeError(f"no request through relay and exit:\n{client.log_tail()}")
    return {"multihop_mbit": transfer(client.host, lab.www, WWW_IP, size=8 << 20),
            "multihop_rtt_ms": rtt_ms(client.host, WWW_IP)}


def failover_rounds(lab: ExitLab, rounds: int) -> list[float]:
    client = lab.client
    assert client is not None
    lab.start_relay(*FAST[:4])
    for node in lab.exits:
        node.start((), "--exit", *POLICY, *lab.bootstrap_args(), *FAST)
    client.start((), "--use-exit", "auto", *lab.bootstrap_args(), *FAST)
    times = []
    for _ in range(rounds):
        if not wait_for(lambda: len([c for c in _candidates(lab) if c["available"]]) == 2, 60):
            raise RuntimeError(f"both exits not available: {_candidates(lab)}")
        if not wait_for(lambda: lab.curl(HELLO, timeout=3).returncode == 0, 30, poll=0.5):
            raise RuntimeError("no request through an exit")
        current = lab.exit_by_id(lab.exits_view()["current"])
        current.stop(signal.SIGKILL)
        killed = time.monotonic()
        if not wait_for(lambda: lab.curl(HELLO, timeout=2).returncode == 0, 30, poll=0.1):
            raise RuntimeError("no failover within 30 s")
        times.append(time.monotonic() - killed)
        current.restart()
    return times


def _candidates(lab: ExitLab) -> list[dict[str, Any]]:
    try:
        return lab.exits_view(timeout=2)["candidates"]  # type: ignore[no-any-return]
    except ControlError:  # the client is still starting
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = require_netns("ping", "nft", "curl")
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        with ExitLab() as lab:
            lab.start_www()
            results.append(paths_round(lab))
        print(json.dumps(results[-1]))
    multihop = []
    for _ in range(args.rounds):
        with ExitLab() as lab:
            lab.start_www()
            multihop.append(multihop_round(lab))
        print(json.dumps(multihop[-1]))
    with ExitLab() as lab:
        lab.start_www()
        failovers = failover_rounds(lab, args.rounds)
    print(json.dumps({"failover_s": [round(t, 2) for t in failovers]}))
    summary = {key: round(statistics.median(r[key] for r in results), 2) for key in results[0]}
    summary |= {key: round(statistics.median(r[key] for r in multihop), 2) for key in multihop[0]}
    summary["failover_s_median"] = round(statistics.median(failovers), 2)
    summary["failover_s_max"] = round(max(failovers), 2)
    print("median:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
