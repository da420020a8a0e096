"""Hostile peers for the adversarial suite (tests/adversarial): py-libp2p hosts that attack a real node.

Run as a process in its own namespace, one attack per run, bounded in time::

    python -m p2pvpn.testing.attacker ATTACK --target /ip4/198.18.1.1/tcp/4242/p2p/12D3... \
        --listen-ip 198.18.1.3 --duration 8 [--identities N] [--per N] [--key K --cert C] ...

It prints one JSON line at the end: what it did (``sent``), what the
victim refused (``refused``), and so on, so a test can check that the
attack was carried out at all. What the *victim* saw is read from its
``status --json``; the attacker's own numbers only prove it tried.

Attacks (``ATTACKS``):

* ``silent-streams``: fresh identities each open ``per`` tunnel streams and never write.
* ``garbage``: tunnel streams starting with random bytes, an oversized length prefix,
  an overlong varint, or a valid Hello followed by garbage.
* ``wrong-network``: Hellos naming another network, and Hellos without a certificate.
* ``spoof``: a certified member sends packets whose source is another member's address.
* ``keepalive-burst``: a certified member sends a burst of Keepalives and never reads again.
* ``conn-flood``: fresh identities connect and hold their connections.
* ``reserve-flood``: fresh identities each ask the victim's relay for a slot.
* ``dht-flood``: fresh identities send junk PUT_VALUEs and ADD_PROVIDERs for random keys.

A *fresh identity* is a new Ed25519 key and its own py-libp2p host, so
every one is a stranger to the victim.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.membership.join import uvarint
from p2pvpn import addressing, identity, libp2p_compat
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.session.handshake import make_hello
from p2pvpn.testing.packets import udp4
from p2pvpn.wire.codec import MAX_FRAME_LEN, PROTOCOL_ID, Data, FrameDecoder, Keepalive, ProtocolError, encode

READ_TIMEOUT = 3.0  # seconds to wait for the victim's answer (a Close, a reset) to one bad stream
CONNECT_TIMEOUT = 5.0


@dataclass
class Target:
    peer_id: ID
    addr: multiaddr.Multiaddr  # without /p2p
    network: str
    listen_ip: str
    duration: float
    identities: int
    per: int
    key: KeyPair | None  # a member's identity (spoof, keepalive-burst, garbage after Hello)
    certificate: bytes  # that member's certificate (owned network), or b""
    spoof_src: str  # spoof: the member address we pretend to be
    dst: str  # spoof: where the packets go (the victim's overlay IPv4)
    retry: float = 1.0  # silent-streams: seconds before a refused or ended stream is opened again


Attack = Callable[[Target, Counter[str]], Awaitable[None]]


@asynccontextmanager
async def fresh_host(target: Target, key: KeyPair | None = None) -> AsyncIterator[Host]:
    """A running py-libp2p host with a new identity (or ``key``), listening on a free port."""
    host = Host(key or create_new_key_pair(), [f"/ip4/{target.listen_ip}/tcp/0"])
    async with host.running():
        yield host


async def connect(host: Host, target: Target) -> bool:
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await host.libp2p.connect(PeerInfo(target.peer_id, [target.addr]))
    except (trio.TooSlowError, *STREAM_ERRORS):
        return False
    return True


async def open_tunnel(host: Host, target: Target) -> object | None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            return await host.open_stream(target.peer_id, [target.addr], PROTOCOL_ID)
    except (trio.TooSlowError, *STREAM_ERRORS):
        return None


async def drain(stream: object, timeout: float = READ_TIMEOUT) -> str:
    """Read until the victim ends the stream: "closed" (EOF, i.e. after its Close), "reset", or "open"."""
    with trio.move_on_after(timeout):
        try:
            while await stream.read(65536):  # type: ignore[attr-defined]
                pass
            return "closed"
        except STREAM_ERRORS:
            return "reset"
    return "open"


async def close_quietly(stream: object) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()  # type: ignore[attr-defined]
        except STREAM_ERRORS:
            pass


def member_hello(target: Target, key: KeyPair, network: str | None = None, certificate: bytes | None = None) -> bytes:
    """A Hello as ``key``'s node would send it: the certificate's addresses, or the derived ones."""
    cert = target.certificate if certificate is None else certificate
    if cert:
        from p2pvpn.membership import cert as certs

        c = certs.open_certificate(cert, target.network)
        addrs = addressing.OverlayAddresses(c.ipv4, c.ipv6, 0)
    else:
        addrs = addressing.derive(identity.peer_id(key).to_bytes(), network or target.network)
    return encode(make_hello(network or target.network, addrs, 1400, certificate=cert))


# -- the attacks ------------------------------------------------------------------


async def silent_streams(target: Target, counts: Counter[str]) -> None:
    """``identities`` strangers each keep ``per`` tunnel streams open that never carry a byte.

    A stream the victim refuses, resets or closes is opened again after ``retry`` seconds, until
    ``duration`` is over.
    """
    deadline = trio.current_time() + target.duration

    async def slot(host: Host) -> None:
        for _ in range(100_000):  # bounded; the deadline ends it first
            if trio.current_time() >= deadline:
                return
            stream = await open_tunnel(host, target)
            if stream is None:
                counts["refused"] += 1
                await trio.sleep(target.retry)
                continue
            counts["opened"] += 1
            counts[await drain(stream, max(0.1, deadline - trio.current_time()))] += 1
            await trio.sleep(target.retry)

    async def one_identity() -> None:
        async with fresh_host(target) as host:
            if not await connect(host, target):
                counts["conn_refused"] += 1
                return
            async with trio.open_nursery() as streams:
                for _ in range(target.per):
                    streams.start_soon(slot, host)

    with trio.move_on_after(target.duration + READ_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(target.identities):
                nursery.start_soon(one_identity)


GARBAGE_KINDS = ("random", "oversized", "overlong_varint", "after_hello")


async def garbage(target: Target, counts: Counter[str]) -> None:
    """Bad bytes on tunnel streams, over and over, from a member and from a stranger."""
    rng = random.Random(12)
    assert target.key is not None, "garbage needs --key (a member, so the bytes reach the decoder after its Hello)"
    deadline = trio.current_time() + target.duration
    async with fresh_host(target, target.key) as member, fresh_host(target) as stranger:
        for round_ in range(10_000):  # bounded; the deadline ends it first
            if trio.current_time() >= deadline:
                break
            kind = GARBAGE_KINDS[round_ % len(GARBAGE_KINDS)]
            host = stranger if kind != "after_hello" and round_ % 2 else member
            stream = await open_tunnel(host, target)
            if stream is None:
                counts["refused"] += 1
                await trio.sleep(0.2)
                continue
            if kind == "random":
                payload = rng.randbytes(4096)
            elif kind == "oversized":  # a length prefix just over the limit, then a body that never ends
                payload = uvarint(MAX_FRAME_LEN + 1) + rng.randbytes(8192)
            elif kind == "overlong_varint":
                payload = b"\xff" * 12
            else:
                payload = member_hello(target, target.key) + b"\x05" + rng.randbytes(4096)
            try:
                await stream.write(payload)
            except STREAM_ERRORS:
                counts["write_failed"] += 1
            counts[f"sent_{kind}"] += 1
            counts[await drain(stream)] += 1
            await close_quietly(stream)


async def wrong_network(target: Target, counts: Counter[str]) -> None:
    """Strangers' Hellos naming another network, and Hellos of our network without a certificate."""
    deadline = trio.current_time() + target.duration

    async def worker(n: int) -> None:
        for round_ in range(10_000):
            if trio.current_time() >= deadline:
                return
            key = create_new_key_pair()
            kind = "other_network" if (round_ + n) % 2 else "no_certificate"
            network = "not-" + target.network[:50] if kind == "other_network" else target.network
            async with fresh_host(target, key) as host:
                stream = await open_tunnel(host, target)
                if stream is None:
                    counts["refused"] += 1
                    await trio.sleep(0.2)
                    continue
                try:
                    await stream.write(member_hello(target, key, network=network, certificate=b""))
                except STREAM_ERRORS:
                    counts["write_failed"] += 1
                counts[f"sent_{kind}"] += 1
                counts[await drain(stream)] += 1
                await close_quietly(stream)

    with trio.move_on_after(target.duration + 2 * READ_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for n in range(max(1, target.identities)):
                nursery.start_soon(worker, n)


async def _member_tunnel(host: Host, target: Target, counts: Counter[str]) -> object | None:
    """A handshaken tunnel as the member ``target.key``: our Hello out, the victim's Hello read."""
    assert target.key is not None, "this attack needs --key (and --cert in an owned network)"
    stream = await open_tunnel(host, target)
    if stream is None:
        counts["refused"] += 1
        return None
    await stream.write(member_hello(target, target.key))  # type: ignore[attr-defined]
    decoder = FrameDecoder()
    with trio.move_on_after(READ_TIMEOUT * 2):
        while (frame := decoder.next_frame()) is None:
            decoder.feed(await stream.read(65536))  # type: ignore[attr-defined]
        counts[f"victim_{type(frame).__name__.lower()}"] += 1
        return stream
    counts["no_hello"] += 1
    return None


async def spoof(target: Target, counts: Counter[str]) -> None:
    """A member sends packets with another member's source address (and answers keepalives, to stay up)."""
    packet = udp4(target.spoof_src, target.dst, b"spoofed" * 20, dport=9)
    frame = encode(Data(packets=[packet] * 32))
    async with fresh_host(target, target.key) as host:
        stream = await _member_tunnel(host, target, counts)
        if stream is None:
            return

        async def answer_keepalives() -> None:
            decoder = FrameDecoder()
            try:
                while data := await stream.read(65536):  # type: ignore[attr-defined]
                    decoder.feed(data)
                    while (f := decoder.next_frame()) is not None:
                        if isinstance(f, Keepalive) and not f.reply:
                            await stream.write(encode(Keepalive(seq=f.seq, reply=True)))  # type: ignore[attr-defined]
            except (ProtocolError, *STREAM_ERRORS):
                counts["stream_ended"] += 1

        with trio.move_on_after(target.duration):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_keepalives)
                for _ in range(1_000_000):
                    try:
                        await stream.write(frame)  # type: ignore[attr-defined]
                    except STREAM_ERRORS:
                        counts["write_failed"] += 1
                        break
                    counts["packets"] += 32
                    await trio.sleep(0.005)
                nursery.cancel_scope.cancel()
        await close_quietly(stream)


KEEPALIVE_CHUNK = 1000  # Keepalives per write
BIG_SEQ = 2**63  # 10-byte varints: each reply takes 16 bytes of our window (9 for a small seq)


async def keepalive_burst(target: Target, counts: Counter[str]) -> None:
    """Issue 12 point 1 over a real network: ``per`` Keepalives, and never a read after the Hello.

    Each Keepalive asks the victim for a reply; nobody reads them, so the
    replies fill our receive window (256 KiB: 16 400 replies) and the
    victim's writes stall. The in-process twin is
    tests/session/test_containment.py. The burst goes out in chunks, each
    only when the victim has granted us window for it: a write of ours that
    waited 5 s would make our own yamux give up and reset the stream first.
    """
    async with fresh_host(target, target.key) as host:
        stream = await _member_tunnel(host, target, counts)
        if stream is None:
            return
        sent = 0
        with trio.move_on_after(target.duration):
            while sent < target.per:
                n = min(KEEPALIVE_CHUNK, target.per - sent)
                chunk = b"".join(encode(Keepalive(seq=BIG_SEQ + i)) for i in range(sent, sent + n))
                if libp2p_compat.send_window(stream) < len(chunk):
                    await trio.sleep(0.02)
                    continue
                try:
                    await stream.write(chunk)  # type: ignore[attr-defined]
                except STREAM_ERRORS:
                    counts["write_failed"] += 1
                    break
                sent += n
                counts["keepalives"] = sent
            await trio.sleep_forever()  # hold the connection, read nothing


async def conn_flood(target: Target, counts: Counter[str]) -> None:
    """``identities`` strangers, ``per`` at a time, each connecting and holding its connection ~2 s."""
    deadline = trio.current_time() + target.duration
    todo = iter(range(target.identities))

    async def worker() -> None:
        for _ in todo:
            if trio.current_time() >= deadline:
                return
            async with fresh_host(target) as host:
                if not await connect(host, target):
                    counts["refused"] += 1
                    continue
                counts["connected"] += 1
                await trio.sleep(2.0)
                counts["held" if target.peer_id in host.connected_peers() else "closed_by_victim"] += 1

    with trio.move_on_after(target.duration + CONNECT_TIMEOUT + 3):
        async with trio.open_nursery() as nursery:
            for _ in range(max(1, target.per)):
                nursery.start_soon(worker)


async def reserve_flood(target: Target, counts: Counter[str]) -> None:
    """``identities`` strangers each reserve a slot on the victim's relay, ``per`` at a time, and hold it."""
    from p2pvpn.nat.circuit import CircuitError, reserve

    todo = iter(range(target.identities))
    done = trio.Event()
    holders = [0]

    async def worker() -> None:
        for _ in todo:
            async with fresh_host(target) as host:
                if not await connect(host, target):
                    counts["conn_refused"] += 1
                    continue
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        await reserve(host, target.peer_id)
                except CircuitError as exc:
                    counts[f"refused_{exc.args[0].rsplit(': ', 1)[-1].lower()}"] += 1
                    continue
                except (trio.TooSlowError, *STREAM_ERRORS):
                    counts["failed"] += 1
                    continue
                counts["granted"] += 1
                holders[0] += 1
                await done.wait()  # a slot lives as long as our connection to the relay

    with trio.move_on_after(target.duration):
        async with trio.open_nursery() as nursery:
            for _ in range(max(1, target.per)):
                nursery.start_soon(worker)
            await trio.sleep(target.duration)
    done.set()


async def dht_flood(target: Target, counts: Counter[str]) -> None:
    """Strangers send PUT_VALUEs of junk records and ADD_PROVIDERs for random keys to the victim's DHT."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    from p2pvpn.discovery.dht import PROTOCOL_ID as KAD

    rng = random.Random(7)
    deadline = trio.current_time() + target.duration
    todo = iter(range(target.identities))

    def put_value() -> bytes:
        key = f"/p2pvpn/{target.network}/{rng.randbytes(16).hex()}".encode()
        msg = Message(type=Message.MessageType.PUT_VALUE, key=key)
        msg.record.key, msg.record.value = key, rng.randbytes(512)
        return msg.SerializeToString()

    def add_provider(host: Host) -> bytes:
        msg = Message(type=Message.MessageType.ADD_PROVIDER, key=rng.randbytes(32))
        provider = msg.providerPeers.add()
        provider.id = host.peer_id.to_bytes()
        provider.addrs.append(multiaddr.Multiaddr(f"/ip4/{target.listen_ip}/tcp/4242").to_bytes())
        return msg.SerializeToString()

    async def send(host: Host, body: bytes, kind: str) -> None:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await host.libp2p.new_stream(target.peer_id, [KAD])
                await stream.write(uvarint(len(body)) + body)
                answer = await drain(stream, 1.0)
        except (trio.TooSlowError, *STREAM_ERRORS):
            counts[f"{kind}_refused"] += 1
            return
        counts[f"{kind}_sent"] += 1
        counts[f"{kind}_{answer}"] += 1

    async def worker() -> None:
        for _ in todo:
            if trio.current_time() >= deadline:
                return
            async with fresh_host(target) as host:
                if not await connect(host, target):
                    counts["conn_refused"] += 1
                    continue
                for _ in range(max(1, target.per)):
                    await send(host, put_value(), "put_value")
                    await send(host, add_provider(host), "add_provider")

    with trio.move_on_after(target.duration + CONNECT_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(worker)


ATTACKS: dict[str, Attack] = {
    "silent-streams": silent_streams,
    "garbage": garbage,
    "wrong-network": wrong_network,
    "spoof": spoof,
    "keepalive-burst": keepalive_burst,
    "conn-flood": conn_flood,
    "reserve-flood": reserve_flood,
    "dht-flood": dht_flood,
}


def parse_args(argv: list[str]) -> tuple[str, Target]:
    p = argparse.ArgumentParser(prog="python -m p2pvpn.testing.attacker", description=__doc__.splitlines()[0])
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--target", required=True, help="the victim, .../p2p/<peer-id>")
    p.add_argument("--network", default="default", help="the victim's network (name or ID)")
    p.add_argument("--listen-ip", required=True, help="our own underlay address")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--identities", type=int, default=16)
    p.add_argument("--per", type=int, default=4)
    p.add_argument("--key", type=Path, help="a member's identity key file")
    p.add_argument("--cert", type=Path, help="that member's certificate (text, p2pvpn-cert1:...)")
    p.add_argument("--spoof-src", default="")
    p.add_argument("--dst", default="")
    p.add_argument("--retry", type=float, default=1.0, help="silent-streams: seconds before reopening a stream")
    a = p.parse_args(argv)
    if not 0 < a.duration <= 120 or not 0 <= a.identities <= 2000 or not 0 <= a.per <= 100_000:
        p.error("--duration 0..120 s, --identities 0..2000, --per 0..100000")
    from p2pvpn.config import split_peer_addr
    from p2pvpn.membership import cert as certs

    peer_id, addr = split_peer_addr(a.target, key="--target")
    ipaddress.IPv4Address(a.listen_ip)
    return a.attack, Target(
        peer_id=peer_id, addr=addr, network=a.network, listen_ip=a.listen_ip, duration=a.duration,
        identities=a.identities, per=a.per, key=identity.load(a.key) if a.key else None,
        certificate=certs.from_text(a.cert.read_text()) if a.cert else b"", spoof_src=a.spoof_src, dst=a.dst,
        retry=max(0.01, a.retry),
    )


def main(argv: list[str] | None = None) -> int:
    name, target = parse_args(sys.argv[1:] if argv is None else argv)
    counts: Counter[str] = Counter()

    async def run() -> float:
        """The attack, until its duration is over or SIGTERM/SIGINT ends it early (the report is printed either way)."""
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        counts["stopped_by_signal"] = 1
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(stop_on_signal)
            await ATTACKS[name](target, counts)
            nursery.cancel_scope.cancel()
        return trio.current_time() - start

    seconds = trio.run(run)
    print(json.dumps({"attack": name, "seconds": round(seconds, 1), "pid": os.getpid(), **counts}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
