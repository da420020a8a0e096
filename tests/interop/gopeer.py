"""Run the go-libp2p interop peer (interop/go-peer) from tests, and build what it answers.

A :class:`GoPeer` is one ``go-peer <mode>`` process. It prints one JSON event
per line on stdout (``ready`` first, then ``connected``, ``tunnel_up``,
``record_validated``, ...); a reader thread collects them, and tests wait for
events with a bounded timeout. ``stats()`` asks for counters with SIGUSR1.
``stop()`` (also on leaving the ``with`` block) terminates the process and
kills it if it lingers, so no test leaves a Go process behind.

Every address a test hands the Go peer is loopback or inside a namespace the
test created: nothing here reaches any other network.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from p2pvpn.dataplane.packet import checksum as _checksum
from p2pvpn.lab.topology import Netns

Event = dict[str, Any]
STOP_TIMEOUT = 5.0
LOOPBACK_LISTEN = ("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")


class GoPeerError(AssertionError):
    """The Go peer did not do what the test waited for (message carries its stderr tail)."""


class GoPeer:
    def __init__(self, binary: Path, mode: str, *args: str, netns: Netns | None = None) -> None:
        self.mode = mode
        self.argv = [str(binary), mode, *args]
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._stderr = tempfile.NamedTemporaryFile(prefix="go-peer-", suffix=".log", delete=False)  # noqa: SIM115
        if netns is not None:  # the topology also stops it when it closes
            self.proc = netns.popen(*self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=self._stderr, text=True)
        else:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self._stderr, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"go-peer-{mode}", daemon=True)
        self._reader.start()

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> GoPeer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> int | None:
        """Terminate (then kill) the process; its exit code. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line.rstrip()}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = Path(self._stderr.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        tail = [json.dumps(e)[:300] for e in self.events[-15:]]
        return (f"go-peer {self.mode} (exit {self.proc.poll()}); last events:\n  " + "\n  ".join(tail)
                + f"\nstderr tail:\n{self.stderr_tail()}")

    # -- events ---------------------------------------------------------------

    def find(self, name: str, pred: Callable[[Event], bool] = lambda e: True, start: int = 0) -> Event | None:
        with self._cond:
            return next((e for e in self.events[start:] if e.get("event") == name and pred(e)), None)

    def wait_for(self, name: str, pred: Callable[[Event], bool] = lambda e: True, timeout: float = 20.0,
                 start: int = 0) -> Event:
        """The first event ``name`` (from index ``start``) matching ``pred``; GoPeerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((e for e in self.events[start:] if e.get("event") == name and pred(e)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(remaining, 0.5))
        raise GoPeerError(f"no {name!r} event within {timeout:g} s\n{self.describe()}")

    async def await_event(self, name: str, pred: Callable[[Event], bool] = lambda e: True,
                          timeout: float = 20.0, start: int = 0) -> Event:
        """:meth:`wait_for` for trio tests: polls, so the event loop keeps running."""
        with trio.move_on_after(timeout):
            while True:
                found = self.find(name, pred, start)
                if found is not None:
                    return found
                if self.proc.poll() is not None and not self._reader.is_alive():
                    break
                await trio.sleep(0.05)
        raise GoPeerError(f"no {name!r} event within {timeout:g} s\n{self.describe()}")

    def ready(self, timeout: float = 30.0) -> Event:
        return self.wait_for("ready", timeout=timeout)

    async def aready(self, timeout: float = 30.0) -> Event:
        return await self.await_event("ready", timeout=timeout)

    def mark(self) -> int:
        """Index of the next event: pass as ``start`` to wait only for what happens from now on."""
        with self._cond:
            return len(self.events)

    async def stats(self, timeout: float = 10.0) -> Event:
        start = self.mark()
        os.kill(self.proc.pid, signal.SIGUSR1)
        return await self.await_event("stats", timeout=timeout, start=start)

    def addr(self, transport: str = "tcp") -> str:
        """The ready line's multiaddr (with /p2p) for ``tcp`` or ``quic-v1``."""
        ready = self.ready()
        for addr in ready["addrs"]:
            if (transport == "tcp" and "/tcp/" in addr) or (transport == "quic-v1" and "/quic-v1" in addr):
                return str(addr)
        raise GoPeerError(f"go-peer has no {transport} address: {ready['addrs']}")

    @property
    def peer_id(self) -> str:
        return str(self.ready()["peer_id"])


def run_tool(binary: Path, args: Sequence[str], lines: Sequence[dict[str, Any]] = (), timeout: float = 60) -> list[Any]:
    """Run ``go-peer record|frame ...`` with JSON ``lines`` on stdin; its JSON answers, one per line."""
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    result = subprocess.run([str(binary), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise GoPeerError(f"go-peer {' '.join(args)} failed ({result.returncode}): {result.stdout} {result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# -- packets the Go responder answers -----------------------------------------


def icmp4_echo(src: str, dst: str, ident: int, seq: int, payload: bytes = b"p2pvpn-interop") -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0x4000, 64, 1, 0, s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def icmp6_echo(src: str, dst: str, ident: int, seq: int, payload: bytes = b"p2pvpn-interop") -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, s, d) + icmp


def transport_checksum_ok(packet: bytes) -> bool:
    """Whether an IPv4/IPv6 ICMP/UDP packet carries correct checksums (as the kernel would check)."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        if _checksum(packet[:ihl]) != 0:
            return False
        proto, body, src, dst = packet[9], packet[ihl:], packet[12:16], packet[16:20]
        if proto == 1:
            return _checksum(body) == 0
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(body))
    else:
        proto, body, src, dst = packet[6], packet[40:], packet[8:24], packet[24:40]
        pseudo = src + dst + struct.pack("!I3xB", len(body), proto)
    return _checksum(pseudo + body) == 0


def parse_reply(packet: bytes) -> dict[str, Any]:
    """The fields tests check on an echo reply."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto, body = packet[9], packet[ihl:]
        src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    else:
        proto, body = packet[6], packet[40:]
        src, dst = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
    out: dict[str, Any] = {"proto": proto, "src": src, "dst": dst}
    if proto in (1, 58):
        kind, _code, _sum, ident, seq = struct.unpack("!BBHHH", body[:8])
        out.update(type=kind, ident=ident, seq=seq, payload=body[8:])
    elif proto == 17:
        sport, dport, _length, _sum = struct.unpack("!HHHH", body[:8])
        out.update(sport=sport, dport=dport, payload=body[8:])
    return out


def mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Random byte flips, insertions, deletions and truncations of ``data`` (seeded: the same every run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op, i = rng.randrange(4), rng.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                b.insert(i, rng.randrange(256))
            elif op == 2 and len(b) > 1:
                del b[i]
            else:
                b = b[:i + 1]
        out.append(bytes(b))
    return out
