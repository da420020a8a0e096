"""ICMP and ICMPv6 echo from Python, so the lab needs no ``ping`` binary.

Theory of operation
-------------------
The lab runs this module inside a node's namespace (``ip netns exec NS
python -m p2pvpn.lab.echo DEST...``): one process per source node pings
every destination, through one raw socket per address family, and prints
one JSON line per destination. Raw ICMP sockets need root (or
CAP_NET_RAW), which the lab has anyway.

The packet work is sans-IO: :func:`echo_request` builds a request,
:func:`parse_echo_reply` recognises our replies among everything else a
raw socket sees (other pings, errors, our own requests on loopback). The
socket loop, :func:`ping_many`, is bounded in time: it ends when every
reply arrived or the last request's timeout passed.
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

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
PAYLOAD = b"p2pvpn-lab-echo!" * 3  # 48 bytes, like ping's default 56 minus its timestamp


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071); kept here so this module imports only the stdlib (fast start)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    """An ICMP (v4) or ICMPv6 (v6) echo request message, without the IP header.

    ICMPv6's checksum covers a pseudo-header the kernel knows and we do
    not; Linux fills it in on raw ICMPv6 sockets, so it stays 0 here.
    """
    kind = ICMP_ECHO_REQUEST if version == 4 else ICMP6_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if version == 6:
        return header + payload
    csum = _checksum(header + payload)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m p2pvpn.lab.echo [--count N] DEST...``: one JSON line per destination; 0 if all answered."""
    parser = argparse.ArgumentParser(prog="p2pvpn.lab.echo", description=__doc__.splitlines()[0])
    parser.add_argument("dests", nargs="+", type=lambda s: str(ipaddress.ip_address(s)))
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        results = ping_many(args.dests, args.count, args.interval, args.timeout)
    except PermissionError:
        print("p2pvpn.lab.echo: error: raw ICMP sockets need root or CAP_NET_RAW", file=sys.stderr)
        return 2
    for r in results:
        print(json.dumps({**asdict(r), "ok": r.ok, "avg_ms": r.avg_ms}))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
