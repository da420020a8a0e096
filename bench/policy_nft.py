"""Python conntrack vs nft conntrack on the TUN: what each costs per received packet (docs/performance.md).

The network policy (docs/protocol.md §17) is enforced in Python at ingress
(p2pvpn.policy). The alternative the issue named is nft on the TUN: the
kernel's connection tracking and a rule set in an input chain. This
benchmark measures both in the same run, so the ratio holds on a busy
machine:

* ``tun_plain``: a real TUN in a fresh namespace; UDP packets of one flow
  (1400 bytes, to a bound socket that never reads, so the kernel takes each
  one through IP, the socket lookup and the receive-buffer drop) written
  into it; nanoseconds per ``write``, which runs the kernel's receive path
  for the packet.
* ``tun_nft``: the same with an nft table on the namespace's input hook that
  does what an enforced policy needs: ``ct state established,related
  accept``, a ``tcp dport 22 drop`` rule, accept the rest. The kernel now
  tracks every packet's flow.
* ``python_tracked``: the Python firewall's work per packet of an
  established flow (``bench/policy_ingress.py``'s ``tracked`` minus its
  ``baseline``, interleaved in this run).

Needs root (a namespace, a TUN, nft). Creates and deletes its namespace.

    sudo python bench/policy_nft.py [--packets 200000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

US, THEM = "100.64.77.1", "100.64.77.2"
PORT = 5000
NFT = """
table inet p2pvpn_bench_policy {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    tcp dport 22 drop
  }
}
"""


def udp(src: str, dst: str, sport: int, dport: int, size: int = 1400) -> bytes:
    payload = bytes(size - 28)
    header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)  # checksum 0: none, valid for IPv4 UDP
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    checksum = _ip_checksum(ip)
    return ip[:10] + struct.pack("!H", checksum) + ip[12:] + header + payload


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = f"p2pvpn-bpol-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def child(packets: int, rounds: int) -> dict[str, float]:
    """Inside the namespace: TUN writes without and with the nft table, interleaved, best of ``rounds``."""
    import pytun  # type: ignore[import-untyped]

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tun = pytun.TunTapDevice(name="bpol0", flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    subprocess.run(["ip", "addr", "add", f"{US}/24", "dev", "bpol0"], check=True)
    subprocess.run(["ip", "link", "set", "bpol0", "up"], check=True)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((US, PORT))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full at once: every packet is dropped at the socket
    packet = udp(THEM, US, 40000, PORT)
    fd = tun.fileno()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(packets):
            os.write(fd, packet)
        return (time.perf_counter() - start) / packets * 1e9

    best = {"tun_plain": float("inf"), "tun_nft": float("inf")}
    for _ in range(rounds):
        best["tun_plain"] = min(best["tun_plain"], run())
        subprocess.run(["nft", "-f", "-"], input=NFT, text=True, check=True)
        try:
            best["tun_nft"] = min(best["tun_nft"], run())
            out = subprocess.run(["conntrack", "-C"], capture_output=True, text=True, check=False).stdout.strip()
            if out:
                best["conntrack_entries"] = float(out)
        except FileNotFoundError:
            pass
        finally:
            subprocess.run(["nft", "delete", "table", "inet", "p2pvpn_bench_policy"], check=True)
    tun.close()
    return best


def python_cost(packets: int, rounds: int) -> dict[str, float]:
    """``tracked`` and ``baseline`` of bench/policy_ingress.py, interleaved, best of ``rounds``."""
    spec = importlib.util.spec_from_file_location("policy_ingress", Path(__file__).with_name("policy_ingress.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import trio

    trio.run(trio.sleep, 0)
    n = packets - packets % module.BATCH
    cases = module.cases()
    best = {"python_baseline": float("inf"), "python_tracked_total": float("inf")}
    for _ in range(rounds):
        best["python_baseline"] = min(best["python_baseline"], cases["baseline"](n) / n * 1e9)
        best["python_tracked_total"] = min(best["python_tracked_total"], cases["tracked"](n) / n * 1e9)
    best["python_tracked"] = best["python_tracked_total"] - best["python_baseline"]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.packets, args.rounds)))
        return 0
    if os.geteuid() != 0:
        print("bench/policy_nft.py: needs root (a namespace, a TUN, nft)", file=sys.stderr)
        return 2
    result: dict[str, float] = {}
    with namespace() as ns:
        for _ in range(2):  # kernel and Python alternate, so both see the same load
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--child",
                                  "--packets", str(args.packets), "--rounds", str(args.rounds)],
                                 capture_output=True, text=True, check=True, timeout=600).stdout
            for k, v in json.loads(out).items():
                result[k] = min(result.get(k, float("inf")), v)
            for k, v in python_cost(args.packets, args.rounds).items():
                result[k] = min(result.get(k, float("inf")), v)
    result["nft_added"] = result["tun_nft"] - result["tun_plain"]
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in result.items()}))
        return 0
    print(f"TUN write, no table       {result['tun_plain']:8.0f} ns/packet")
    print(f"TUN write, nft conntrack  {result['tun_nft']:8.0f} ns/packet  (+{result['nft_added']:.0f})")
    print(f"Python ingress, no policy {result['python_baseline']:8.0f} ns/packet")
    print(f"Python ingress, tracked   {result['python_tracked_total']:8.0f} ns/packet  (+{result['python_tracked']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
