"""A TCP transfer with a SHA-256 at both ends, for lab tests: ``python -m p2pvpn.lab.transfer``.

``recv --bind IP --port P`` accepts one connection, reads to EOF and prints
one JSON line ``{"bytes", "sha256", "seconds"}``. ``send --to IP --port P
--bytes N`` connects (retrying every 0.2 s until ``--connect-timeout``, so it
can be started before the tunnel exists), prints ``connected``, sends N
bytes of seeded random data, optionally at ``--rate`` bytes/s and with
``--marker`` written at the start of every KiB (a pattern to look for in a
capture), and prints the same JSON line. Every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import time

CHUNK = 64 * 1024
MARK_EVERY = 1024


def payload(total: int, marker: bytes, seed: int = 4242) -> bytes:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(total))
    if marker:
        for offset in range(0, max(0, total - len(marker)), MARK_EVERY):
            data[offset : offset + len(marker)] = marker
    return bytes(data)


def send(args: argparse.Namespace) -> int:
    data = payload(args.bytes, args.marker.encode())
    deadline = time.monotonic() + args.connect_timeout
    sock = None
    while sock is None:
        try:
            sock = socket.create_connection((args.to, args.port), timeout=1.0)
        except OSError:
            if time.monotonic() >= deadline:
                print(json.dumps({"error": "could not connect"}), flush=True)
                return 1
            time.sleep(0.2)
    print("connected", flush=True)
    sock.settimeout(args.io_timeout)
    started = time.monotonic()
    sent = 0
    with sock:
        while sent < len(data):
            chunk = data[sent : sent + CHUNK]
            sock.sendall(chunk)
            sent += len(chunk)
            if args.rate:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait for the receiver to close: everything arrived
    seconds = time.monotonic() - started
    print(json.dumps({"bytes": sent, "sha256": hashlib.sha256(data).hexdigest(), "seconds": seconds}), flush=True)
    return 0


def recv(args: argparse.Namespace) -> int:
    with socket.create_server((args.bind, args.port)) as server:
        server.settimeout(args.connect_timeout)
        conn, _ = server.accept()
    digest = hashlib.sha256()
    total = 0
    started = time.monotonic()
    with conn:
        conn.settimeout(args.io_timeout)
        while data := conn.recv(CHUNK):
            digest.update(data)
            total += len(data)
    print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "seconds": time.monotonic() - started}),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2pvpn.lab.transfer")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--rate", type=float, default=0.0, help="bytes per second; 0 = as fast as possible")
    s.add_argument("--marker", default="")
    r = sub.add_parser("recv")
    r.add_argument("--bind", required=True)
    for p in (s, r):
        p.add_argument("--port", type=int, default=5201)
        p.add_argument("--connect-timeout", type=float, default=60.0)
        p.add_argument("--io-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    return send(args) if args.cmd == "send" else recv(args)


if __name__ == "__main__":
    sys.exit(main())
