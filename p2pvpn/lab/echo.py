"""ICMP echo from Python, for RTTs and "time to first answered ping" in the lab.

The ``ping`` binary is not on every fresh machine, and its output is text to
parse; this sends echo requests on a raw socket (root, which the lab is) and
matches replies by identifier and sequence. Run it inside a namespace::

    python -m p2pvpn.lab.echo rtt 198.18.0.2 --count 20 --interval 0.05
    python -m p2pvpn.lab.echo first 100.64.0.2 --since 1234.5 --timeout 30

``first`` sends an echo every ``--interval`` until one is answered and reports
how long after ``--since`` (a CLOCK_MONOTONIC reading, which all processes
share) the answer came: sends that fail because no route exists yet are
counted, not fatal. Both print one JSON line; bad input exits 2 with one line.
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
from typing import Any

from p2pvpn.dataplane.packet import checksum

ECHO_REQUEST, ECHO_REPLY = 8, 0
PAYLOAD = b"p2pvpn-echo-" + bytes(20)
MAX_COUNT = 10_000
MAX_TIMEOUT = 600.0
# Lab traffic only: loopback, the underlay, the overlay and the simulated internet.
ALLOWED = tuple(ipaddress.IPv4Network(n) for n in ("127.0.0.0/8", "198.18.0.0/15", "100.64.0.0/10",
                                                   "203.0.113.0/24"))


class Echo:
    """A raw ICMP socket that sends numbered echoes and times their replies."""

    def __init__(self, dst: str) -> None:
        self.dst = str(ipaddress.IPv4Address(dst))
        self.ident = os.getpid() & 0xFFFF
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sent_at: dict[int, float] = {}
        self.rtts: dict[int, float] = {}
        self.send_errors = 0
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self) -> None:
        """Send the next echo; a failure (no route yet, ...) is counted."""
        self._seq = (self._seq + 1) & 0xFFFF
        head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self.ident, self._seq)
        packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(head + PAYLOAD), self.ident, self._seq)
        # Stamped before sending: a preemption between the two then lengthens
        # the RTT we report, never shortens it below the path's.
        sent_at = time.monotonic()
        try:
            self.sock.sendto(packet + PAYLOAD, (self.dst, 0))
        except OSError:
            self.send_errors += 1
            return
        self.sent_at[self._seq] = sent_at

    def receive(self, until: float) -> int | None:
        """Wait until ``until`` (monotonic) for one of our replies; its sequence number or None."""
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            data, (src, _) = self.sock.recvfrom(2048)
            now = time.monotonic()
            ihl = (data[0] & 0x0F) * 4
            if src != self.dst or len(data) < ihl + 8:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == ECHO_REPLY and ident == self.ident and seq in self.sent_at and seq not in self.rtts:
                self.rtts[seq] = now - self.sent_at[seq]
                return seq
        return None


def rtt(dst: str, count: int, interval: float, timeout: float) -> dict[str, Any]:
    """``count`` echoes ``interval`` apart; RTT statistics in ms and the loss."""
    echo = Echo(dst)
    try:
        for _ in range(count):
            echo.send()
            next_send = time.monotonic() + interval
            while echo.receive(next_send) is not None:
                pass
        end = time.monotonic() + timeout
        while len(echo.rtts) < len(echo.sent_at) and echo.receive(end) is not None:
            pass
    finally:
        echo.close()
    values = sorted(v * 1000 for v in echo.rtts.values())
    out: dict[str, Any] = {"sent": count, "received": len(values), "send_errors": echo.send_errors,
                           "loss_pct": round(100 * (1 - len(values) / count), 1)}  # fmt: skip
    if values:
        out.update(min_ms=round(values[0], 3), avg_ms=round(sum(values) / len(values), 3),
                   median_ms=round(values[len(values) // 2], 3), max_ms=round(values[-1], 3))  # fmt: skip
    return out


def first(dst: str, since: float, interval: float, timeout: float) -> dict[str, Any]:
    """Echo every ``interval`` until one is answered; seconds from ``since`` to that answer."""
    echo = Echo(dst)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            echo.send()
            if echo.receive(min(deadline, time.monotonic() + interval)) is not None:
                return {"first_reply_s": round(time.monotonic() - since, 3), "sent": len(echo.sent_at),
                        "send_errors": echo.send_errors}  # fmt: skip
    finally:
        echo.close()
    return {"first_reply_s": None, "sent": len(echo.sent_at), "send_errors": echo.send_errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2pvpn.lab.echo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_rtt = sub.add_parser("rtt", help="RTT statistics of --count echoes")
    p_rtt.add_argument("dst")
    p_rtt.add_argument("--count", type=int, default=20)
    p_rtt.add_argument("--interval", type=float, default=0.05)
    p_rtt.add_argument("--timeout", type=float, default=1.0, help="wait for replies after the last send")
    p_first = sub.add_parser("first", help="time from --since to the first answered echo")
    p_first.add_argument("dst")
    p_first.add_argument("--since", type=float, default=None, help="CLOCK_MONOTONIC start (default: now)")
    p_first.add_argument("--interval", type=float, default=0.01)
    p_first.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        dst = ipaddress.IPv4Address(args.dst)
    except ValueError:
        parser.error(f"{args.dst!r} is not an IPv4 address")
    if not any(dst in net for net in ALLOWED):
        parser.error(f"{dst} is outside the lab ranges ({', '.join(str(n) for n in ALLOWED)})")
    if not 0.001 <= args.interval <= 10 or not 0 < args.timeout <= MAX_TIMEOUT:
        parser.error(f"--interval must be within 0.001..10 and --timeout within 0..{MAX_TIMEOUT:g}")
    if args.cmd == "rtt" and not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    try:
        if args.cmd == "rtt":
            out = rtt(args.dst, args.count, args.interval, args.timeout)
        else:
            since = time.monotonic() if args.since is None else args.since
            out = first(args.dst, since, args.interval, args.timeout)
    except PermissionError:
        print("echo: raw ICMP sockets need root (CAP_NET_RAW)", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0 if out.get("received", 1) and out.get("first_reply_s", 0) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
