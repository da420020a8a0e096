"""ICMP echo from Python with a raw socket: the benchmarks' ping, no ``ping`` binary needed.

Runs inside a namespace (``ip netns exec NS python bench/echo.py ...``) and
prints one JSON line. Two modes:

* ``rtt``: ``--count`` echoes, ``--interval`` apart, one at a time; the RTT
  of each (null when no reply came within ``--timeout``).
* ``first``: one echo every ``--interval`` until the first reply, at most
  ``--timeout`` seconds; prints the wall-clock time (``time.time()``) the
  reply arrived, to compare with when the nodes were started.

Only for addresses in namespaces the benchmark created (lab underlay,
overlay); it refuses any other address.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

ALLOWED = [ipaddress.ip_network(n) for n in ("198.18.0.0/15", "100.64.0.0/10")]
ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident, seq) + payload


class Pinger:
    """One raw ICMP socket; ``echo`` sends one request and waits for its reply."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def echo(self, timeout: float) -> float | None:
        """Seconds until the reply, or None after ``timeout``."""
        self.seq = (self.seq + 1) & 0xFFFF
        payload = b"p2pvpn-echo" + bytes(45)  # 56 bytes, like ping's default
        sent = time.perf_counter()
        deadline = sent + timeout
        try:
            self.sock.sendto(echo_request(self.ident, self.seq, payload), (self.addr, 0))
        except OSError:  # no route yet (the TUN is not up): counts as unanswered
            time.sleep(max(deadline - time.perf_counter(), 0))
            return None
        while (left := deadline - time.perf_counter()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data, (src, _) = self.sock.recvfrom(2048)
            now = time.perf_counter()
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if src == self.addr and kind == ECHO_REPLY and ident == self.ident and seq == self.seq:
                return now - sent
        return None

    def close(self) -> None:
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("rtt", "first"))
    parser.add_argument("addr")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        addr = ipaddress.ip_address(args.addr)
    except ValueError:
        parser.error(f"{args.addr!r} is not an IPv4 address")
    if addr.version != 4 or not any(addr in n for n in ALLOWED):
        parser.error(f"{addr} is outside the lab ranges {', '.join(map(str, ALLOWED))}")
    if not (1 <= args.count <= 100_000 and 0 < args.interval <= 10 and 0 < args.timeout <= 120):
        parser.error("--count 1..100000, --interval 0..10 s, --timeout 0..120 s")
    pinger = Pinger(str(addr))
    try:
        if args.mode == "rtt":
            rtts = []
            for _ in range(args.count):
                rtts.append(pinger.echo(args.timeout))
                time.sleep(args.interval)
            print(json.dumps({"rtts": rtts}))
            return 0
        deadline = time.monotonic() + args.timeout
        sent = 0
        while time.monotonic() < deadline:
            sent += 1
            if pinger.echo(min(args.interval, max(deadline - time.monotonic(), 0.001))) is not None:
                print(json.dumps({"answered_at": time.time(), "sent": sent}))
                return 0
        print(json.dumps({"answered_at": None, "sent": sent}))
        return 1
    finally:
        pinger.close()


if __name__ == "__main__":
    sys.exit(main())
