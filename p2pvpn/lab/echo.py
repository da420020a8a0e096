"""ICMP and ICMPv6 echo from Python, so the lab and the benchmarks need no ``ping`` binary.

Theory of operation
-------------------
The lab and the benchmarks run this module inside a namespace::

    python -m p2pvpn.lab.echo ping 100.64.0.2 fd00::2 --count 3     # the lab: every destination at once
    python -m p2pvpn.lab.echo rtt 198.18.0.2 --count 20 --interval 0.05
    python -m p2pvpn.lab.echo first 100.64.0.2 --since 1234.5 --timeout 30

``ping`` echoes every destination (IPv4 and IPv6) through one raw socket per
family and prints one JSON line per destination; ``rtt`` gives RTT
statistics of one IPv4 destination; ``first`` sends an echo every
``--interval`` until one is answered and reports how long after ``--since``
(a CLOCK_MONOTONIC reading, which all processes share) the answer came.
Each prints JSON; bad input exits 2 with one line. Raw ICMP sockets need
root (or CAP_NET_RAW), which the lab has anyway. Only the lab's own ranges
(loopback, underlay, overlay, simulated internet) are accepted as targets.

The packet work is sans-IO: :func:`echo_request` builds a request,
:func:`parse_echo_reply` recognises our replies among everything else a
raw socket sees (other pings, errors, our own requests on loopback). Every
socket loop is bounded in time.
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from p2pvpn.dataplane.packet import checksum  # stdlib only behind it: a fast start

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
PAYLOAD = b"p2pvpn-lab-echo!" * 3  # 48 bytes, like ping's default 56 minus its timestamp
MAX_COUNT = 10_000
MAX_TIMEOUT = 600.0
# Lab traffic only: loopback, the underlay, the overlay and the simulated internet.
ALLOWED = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "198.18.0.0/15", "100.64.0.0/10", "203.0.113.0/24", "::1/128", "fd00::/8", "2001:db8::/32",
))  # fmt: skip


def echo_request(version: int, ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    """An ICMP (v4) or ICMPv6 (v6) echo request message, without the IP header.

    ICMPv6's checksum covers a pseudo-header the kernel knows and we do
    not; Linux fills it in on raw ICMPv6 sockets, so it stays 0 here.
    """
    kind = ICMP_ECHO_REQUEST if version == 4 else ICMP6_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if version == 6:
        return header + payload
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, csum, ident & 0xFFFF, seq & 0xFFFF) + payload


def parse_echo_reply(version: int, data: bytes) -> tuple[int, int] | None:
    """``(ident, seq)`` if ``data`` (as a raw socket returns it) is an echo reply, else None.

    An IPv4 raw socket returns the IP header too; an ICMPv6 one does not.
    """
    if version == 4:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        return None
    kind, code, _csum, ident, seq = struct.unpack("!BBHHH", data[:8])
    if code != 0 or kind != (ICMP_ECHO_REPLY if version == 4 else ICMP6_ECHO_REPLY):
        return None
    return ident, seq


@dataclass
class EchoResult:
    """What one destination answered."""

    dest: str
    sent: int = 0
    received: int = 0
    rtts_ms: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.received > 0 and self.received == self.sent

    @property
    def avg_ms(self) -> float | None:
        return sum(self.rtts_ms) / len(self.rtts_ms) if self.rtts_ms else None


def ping_many(dests: Sequence[str], count: int = 3, interval: float = 0.2, timeout: float = 2.0) -> list[EchoResult]:
    """Send ``count`` echoes to each of ``dests``, ``interval`` s apart; wait ``timeout`` s for the last replies."""
    results = {d: EchoResult(d) for d in dests}
    families = {d: ipaddress.ip_address(d).version for d in dests}
    socks: dict[int, socket.socket] = {}
    ident = os.getpid() & 0xFFFF
    # (version, seq) -> (dest, send time); seq numbers are unique per family across destinations
    pending: dict[tuple[int, int], tuple[str, float]] = {}
    try:
        for version in sorted(set(families.values())):
            if version == 4:
                socks[4] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            else:
                socks[6] = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            socks[version].setblocking(False)
        seq = 0
        next_send = time.monotonic()
        rounds_left = count
        deadline = next_send + (count - 1) * interval + timeout
        while time.monotonic() < deadline:  # bounded by deadline
            now = time.monotonic()
            if rounds_left and now >= next_send:
                for dest in dests:
                    version = families[dest]
                    seq += 1
                    try:
                        socks[version].sendto(echo_request(version, ident, seq), (dest, 0))
                        results[dest].sent += 1
                        pending[(version, seq)] = (dest, time.monotonic())
                    except OSError as exc:  # e.g. no route: counts as sent, never answered
                        results[dest].sent += 1
                        results[dest].error = exc.strerror or str(exc)
                rounds_left -= 1
                next_send = now + interval
            if not rounds_left and not pending:
                break
            wait = max(0.0, min(deadline, next_send if rounds_left else deadline) - time.monotonic())
            readable, _, _ = select.select(list(socks.values()), [], [], wait)
            for sock in readable:
                version = 4 if sock.family == socket.AF_INET else 6
                for _ in range(64):  # drain, bounded
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    reply = parse_echo_reply(version, data)
                    if reply is None or reply[0] != ident:
                        continue
                    entry = pending.pop((version, reply[1]), None)
                    if entry is not None:
                        dest, sent_at = entry
                        results[dest].received += 1
                        results[dest].rtts_ms.append((time.monotonic() - sent_at) * 1000.0)
    finally:
        for sock in socks.values():
            sock.close()
    return [results[d] for d in dests]


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
        packet = echo_request(4, self.ident, self._seq)
        # Stamped before sending: a preemption between the two then lengthens
        # the RTT we report, never shortens it below the path's.
        sent_at = time.monotonic()
        try:
            self.sock.sendto(packet, (self.dst, 0))
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
            reply = parse_echo_reply(4, data)
            if src != self.dst or reply is None:
                continue
            ident, seq = reply
            if ident == self.ident and seq in self.sent_at and seq not in self.rtts:
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


def _target(text: str) -> str:
    """A destination inside the lab's ranges, else a usage error."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    if not any(address in net for net in ALLOWED if net.version == address.version):
        raise argparse.ArgumentTypeError(f"{address} is outside the lab ranges ({', '.join(map(str, ALLOWED))})")
    return str(address)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one mode; JSON on stdout; 0 if answered, 1 if not, 2 for bad input or no permission."""
    parser = argparse.ArgumentParser(prog="python -m p2pvpn.lab.echo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_ping = sub.add_parser("ping", help="--count echoes to each destination; one JSON line per destination")
    p_ping.add_argument("dests", nargs="+", type=_target)
    p_ping.add_argument("--count", type=int, default=3)
    p_ping.add_argument("--interval", type=float, default=0.2)
    p_ping.add_argument("--timeout", type=float, default=2.0, help="wait for replies after the last send")
    p_rtt = sub.add_parser("rtt", help="RTT statistics of --count echoes")
    p_rtt.add_argument("dst", type=_target)
    p_rtt.add_argument("--count", type=int, default=20)
    p_rtt.add_argument("--interval", type=float, default=0.05)
    p_rtt.add_argument("--timeout", type=float, default=1.0, help="wait for replies after the last send")
    p_first = sub.add_parser("first", help="time from --since to the first answered echo")
    p_first.add_argument("dst", type=_target)
    p_first.add_argument("--since", type=float, default=None, help="CLOCK_MONOTONIC start (default: now)")
    p_first.add_argument("--interval", type=float, default=0.01)
    p_first.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.cmd in ("rtt", "first") and ipaddress.ip_address(args.dst).version != 4:
        parser.error(f"{args.cmd} takes an IPv4 address")
    if not 0.001 <= args.interval <= 10 or not 0 < args.timeout <= MAX_TIMEOUT:
        parser.error(f"--interval must be within 0.001..10 and --timeout within 0..{MAX_TIMEOUT:g}")
    if args.cmd != "first" and not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    try:
        if args.cmd == "ping":
            results = ping_many(args.dests, args.count, args.interval, args.timeout)
            for r in results:
                print(json.dumps({**asdict(r), "ok": r.ok, "avg_ms": r.avg_ms}))
            return 0 if all(r.ok for r in results) else 1
        if args.cmd == "rtt":
            out = rtt(args.dst, args.count, args.interval, args.timeout)
        else:
            since = time.monotonic() if args.since is None else args.since
            out = first(args.dst, since, args.interval, args.timeout)
    except PermissionError:
        print("python -m p2pvpn.lab.echo: error: raw ICMP sockets need root (CAP_NET_RAW)", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0 if out.get("received", 1) and out.get("first_reply_s", 0) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
