"""The DNS responder's sockets: UDP and TCP port 53 on the node's overlay addresses.

Only I/O lives here; answers come from ``p2pvpn.names.responder``. Bounds:
a token bucket over all queries (RATE per second, BURST at once; a query
over it is dropped and counted ``rate_limited``), queries of at most
MAX_QUERY bytes, at most MAX_TCP_CONNECTIONS TCP clients at once, each
with MAX_TCP_QUERIES queries and TCP_IDLE seconds per query. Every outcome
is counted; nothing raises out of a loop for one bad client.

The sockets bind with IP_FREEBIND: the overlay IPv6 address may still be
tentative (duplicate address detection) when the node starts.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import trio

from p2pvpn.names.table import MAX_QUERY, NameTable

log = logging.getLogger(__name__)

DNS_PORT = 53
RATE = 500.0
BURST = 500.0
MAX_TCP_CONNECTIONS = 16
MAX_TCP_QUERIES = 16
TCP_IDLE = 5.0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; sans-IO (``now`` is given)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.updated: float | None = None

    def take(self, now: float) -> bool:
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class DnsServer:
    def __init__(self, addresses: Sequence[Address], table: Callable[[], NameTable], port: int = DNS_PORT,
                 rate: float = RATE, burst: float = BURST) -> None:
        self.addresses = list(addresses)
        self.port = port
        self._table = table
        self.bucket = TokenBucket(rate, burst)
        self.counters: Counter[str] = Counter()
        self.listening: list[str] = []
        self._tcp_slots = trio.CapacityLimiter(MAX_TCP_CONNECTIONS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; an address that cannot be bound is logged once and skipped."""
        udp: list[trio.socket.SocketType] = []
        tcp: list[trio.SocketListener] = []
        try:
            for address in self.addresses:
                try:
                    udp.append(await _bound(address, self.port, socket.SOCK_DGRAM))
                    stream = await _bound(address, self.port, socket.SOCK_STREAM)
                    stream.listen(MAX_TCP_CONNECTIONS)
                    tcp.append(trio.SocketListener(stream))
                except OSError as exc:
                    log.warning("DNS responder: cannot listen on %s port %d: %s", address, self.port,
                                exc.strerror or exc)
                    continue
                self.listening.append(_text(address, self.port))
            if self.listening:
                log.info("DNS responder for %s on %s", " and ".join(z.to_text(omit_final_dot=True)
                                                                    for z in self._table().zones),
                         ", ".join(self.listening))
            async with trio.open_nursery() as nursery:
                for sock in udp:
                    nursery.start_soon(self._serve_udp, sock)
                for listener in tcp:
                    nursery.start_soon(self._serve_tcp, listener)
                task_status.started()
                await trio.sleep_forever()
        finally:
            for sock in udp:
                sock.close()
            for listener in tcp:
                listener.socket.close()

    def _answer(self, query: bytes, *, tcp: bool) -> bytes | None:
        if not self.bucket.take(trio.current_time()):
            self.counters["rate_limited"] += 1
            return None
        from p2pvpn.names.responder import answer  # dnspython (~3 MiB) loads with the first query, not at start

        result = answer(query, self._table(), tcp=tcp)
        self.counters[result.outcome] += 1
        return result.response

    async def _serve_udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_QUERY + 1)
            except OSError as exc:  # e.g. an ICMP error from an earlier reply, reported on this socket
                self.counters["receive_error"] += 1
                log.debug("DNS receive: %r", exc)
                continue
            response = self._answer(data, tcp=False)
            if response is None:
                continue
            try:
                await sock.sendto(response, source)
            except OSError as exc:
                self.counters["send_error"] += 1
                log.debug("DNS reply to %s: %r", source, exc)

    async def _serve_tcp(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn = await listener.accept()
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    self.counters["accept_error"] += 1
                    await trio.sleep(0.1)
                    continue
                try:
                    self._tcp_slots.acquire_on_behalf_of_nowait(conn)
                except trio.WouldBlock:
                    self.counters["tcp_busy"] += 1
                    await conn.aclose()
                    continue
                nursery.start_soon(self._tcp_client, conn)

    async def _tcp_client(self, conn: trio.SocketStream) -> None:
        try:
            async with conn:
                for _ in range(MAX_TCP_QUERIES):
                    with trio.move_on_after(TCP_IDLE) as scope:
                        length = int.from_bytes(await _read_exactly(conn, 2), "big")
                        query = await _read_exactly(conn, length) if length <= MAX_QUERY else b""
                    if scope.cancelled_caught or not length:
                        return
                    if length > MAX_QUERY:
                        self.counters["too_big"] += 1
                        return
                    response = self._answer(query, tcp=True)
                    if response is None:
                        return
                    await conn.send_all(len(response).to_bytes(2, "big") + response)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, OSError) as exc:
            self.counters["tcp_closed"] += 1
            log.debug("DNS TCP client: %r", exc)
        finally:
            self._tcp_slots.release_on_behalf_of(conn)

    def status(self) -> dict[str, Any]:
        zones = self._table().zones
        return {"zone": zones[0].to_text(omit_final_dot=True), "zones": [z.to_text(omit_final_dot=True) for z in zones],
                "listening": list(self.listening),
                "counters": dict(self.counters)}


async def _bound(address: Address, port: int, kind: int) -> trio.socket.SocketType:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_exactly(conn: trio.SocketStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await conn.receive_some(n - len(data))
        if not chunk:
            raise EOFError("the client closed the connection mid-message")
        data += chunk
    return data


def _text(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
