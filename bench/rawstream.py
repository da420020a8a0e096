"""Raw py-libp2p stream throughput: the ceiling a libp2p VPN tunnel can reach.

One client stream pushes 64 KiB ``stream.write`` calls for ``--seconds`` over
TCP + Noise + yamux (py-libp2p ``new_host``), then half-closes. The server
counts what it *received*, from the first byte to EOF, and answers with a
JSON report on the same stream; the client prints one JSON line holding both
sides. ``mbit_s`` is the receiver's number: the sender's also counts bytes
still sitting in socket buffers and the yamux window when it stops.

    python bench/rawstream.py server --listen /ip4/198.18.0.2/tcp/4010
        -> stdout line 1: /ip4/198.18.0.2/tcp/4010/p2p/12D3Koo...
           then one JSON line per finished stream
    python bench/rawstream.py client --peer MADDR --seconds 10
        -> {"mbit_s": ..., "receiver_bytes": ..., "sender_mbit_s": ..., ...}

Both sides are bounded in time: the server exits after ``--lifetime`` seconds
(or after one stream with ``--once``), the client after ``--seconds`` plus a
fixed grace for connecting and for the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

PROTOCOL = TProtocol("/p2pvpn/bench/rawstream/1.0.0")
CHUNK = 64 * 1024
READ_SIZE = 256 * 1024
GRACE = 30.0  # seconds for dialing and for the report, on top of --seconds
MAX_REPORT = 4096


def make_host() -> IHost:
    """A host with exactly the stack the VPN uses: TCP, Noise only, yamux."""
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
    )


def _mbit_s(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


async def _receive(stream: INetStream) -> dict[str, Any]:
    """Read to EOF; time runs from the first byte to EOF."""
    total = 0
    first = last = 0.0
    while True:  # ends at EOF; the caller bounds it in time
        try:
            data = await stream.read(READ_SIZE)
        except StreamEOF:
            break
        if not data:
            break
        if total == 0:
            first = trio.current_time()
        total += len(data)
        last = trio.current_time()
    elapsed = last - first
    return {"bytes": total, "seconds": round(elapsed, 4), "mbit_s": round(_mbit_s(total, elapsed), 2)}


async def serve(listen: str, lifetime: float, once: bool) -> None:
    host = make_host()
    done = trio.Event()

    async def handler(stream: INetStream) -> None:
        with trio.move_on_after(lifetime):
            try:
                report = await _receive(stream)
                await stream.write(json.dumps(report).encode())
                await stream.close()
            except StreamError as exc:
                report = {"error": f"stream failed: {exc!r}"}
        print(json.dumps(report), flush=True)
        if once:
            done.set()

    async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
        host.set_stream_handler(PROTOCOL, handler)
        print(host.get_addrs()[0], flush=True)
        with trio.move_on_after(lifetime):
            await done.wait()


async def push(peer: str, seconds: float) -> dict[str, Any]:
    host = make_host()
    info = info_from_p2p_addr(multiaddr.Multiaddr(peer))
    payload = bytes(CHUNK)
    async with host.run(listen_addrs=[]):
        with trio.fail_after(GRACE):
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [PROTOCOL])
        sent = 0
        start = trio.current_time()
        deadline = start + seconds
        with trio.fail_after(seconds + GRACE):
            while trio.current_time() < deadline:
                await stream.write(payload)
                sent += CHUNK
        sender_seconds = trio.current_time() - start
        await stream.close_write()
        reply = b""
        with trio.fail_after(GRACE):
            while len(reply) < MAX_REPORT:
                try:
                    chunk = await stream.read(MAX_REPORT)
                except StreamEOF:
                    break
                if not chunk:
                    break
                reply += chunk
        await stream.close()
    receiver = json.loads(reply)
    return {
        "mbit_s": receiver["mbit_s"],
        "measured_at": "receiver",
        "receiver_bytes": receiver["bytes"],
        "receiver_seconds": receiver["seconds"],
        "sender_bytes": sent,
        "sender_seconds": round(sender_seconds, 4),
        "sender_mbit_s": round(_mbit_s(sent, sender_seconds), 2),
        "chunk_bytes": CHUNK,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server", help="receive streams and report what arrived")
    srv.add_argument("--listen", required=True, help="e.g. /ip4/198.18.0.2/tcp/4010")
    srv.add_argument("--lifetime", type=float, default=600.0, help="exit after this many seconds")
    srv.add_argument("--once", action="store_true", help="exit after the first stream")
    cli = sub.add_parser("client", help="push one stream and print a JSON line")
    cli.add_argument("--peer", required=True, help="server multiaddr with /p2p/<id>")
    cli.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        if args.role == "server":
            trio.run(serve, args.listen, args.lifetime, args.once)
        else:
            print(json.dumps(trio.run(push, args.peer, args.seconds)), flush=True)
    except KeyboardInterrupt:
        return 130
    except (OSError, StreamError, trio.TooSlowError, ValueError) as exc:
        print(f"rawstream: {args.role} failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
