"""Reachability: AutoNAT v1 (``/libp2p/autonat/1.0.0``), both as server and as client.

Theory of operation:
* Client: every node asks peers it is directly connected to, one at a
  time, to dial it back on its advertised addresses. An answer OK counts as
  "reachable", E_DIAL_ERROR as "not reachable"; refusals and timeouts count
  as nothing. :class:`Verdicts` turns the last few answers into
  PUBLIC / PRIVATE (majority; a tie keeps the previous status). While the
  status is UNKNOWN we ask every couple of seconds, later every
  ``RECHECK`` seconds, so a node that moves behind a NAT (or gets a port
  forward) notices.
* Server: on a DIAL request we dial the requester back on a *new*
  connection, only ever at the IP address we observe it at (never an
  address it names, so we cannot be used to attack third parties): each
  TCP port it advertises, at the observed IP. A requester behind a NAT that
  drops unsolicited packets (all of them) is not reachable there.

Why not py-libp2p's ``AutoNATService``: its server dials back with
``host.connect()``, which returns at once when a connection to the peer
already exists; the requester is always connected (it just sent the
request over that connection), so the server answers OK to everyone and
every node believes it is public. We dial with ``Swarm.dial_addr``, which
always opens a fresh connection, and close that connection afterwards.
The wire messages are py-libp2p's ``autonat_pb2`` types.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from p2pvpn import libp2p_compat
from p2pvpn.host import STREAM_ERRORS, Host, close_quietly, relay_of, remote_peer

log = logging.getLogger(__name__)

PROTOCOL = TProtocol("/libp2p/autonat/1.0.0")
MAX_MESSAGE = 4096
DIALBACK_TIMEOUT = 4.0      # seconds per dial-back attempt; NATs drop, so failure is a timeout
MAX_DIALBACKS = 4           # addresses we try per request
REQUEST_TIMEOUT = DIALBACK_TIMEOUT * MAX_DIALBACKS + 5.0
WINDOW = 4                  # answers that decide the status
PROBE_UNKNOWN = 0.5         # seconds between looks for someone to ask while we know nothing
RECHECK = 120.0             # seconds between questions once we know
CONCURRENT_DIALBACKS = 8    # server side


class Reachability(enum.StrEnum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


class Verdicts:
    """The last WINDOW answers, and what they say (pure)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._answers: deque[bool] = deque(maxlen=window)
        self.status = Reachability.UNKNOWN

    def add(self, reachable: bool) -> Reachability:
        self._answers.append(reachable)
        yes = sum(self._answers)
        no = len(self._answers) - yes
        if yes > no:
            self.status = Reachability.PUBLIC
        elif no > yes:
            self.status = Reachability.PRIVATE
        return self.status


class AutoNat:
    """Answers dial-back requests and keeps our own reachability current.

    ``forced`` ("public" or "private") skips the questions: operators who know
    (a VPS, a node behind a NAT they control) say so in the config.
    """

    def __init__(
        self,
        host: Host,
        addrs: Callable[[], Sequence[multiaddr.Multiaddr]],
        on_change: Callable[[Reachability], None],
        forced: str = "auto",
    ) -> None:
        self.host = host
        self._addrs = addrs
        self._on_change = on_change
        self.forced = forced
        self.verdicts = Verdicts()
        self.status = Reachability.UNKNOWN
        self.since = time.time()
        self.asked = 0
        self.answers: dict[str, int] = {"ok": 0, "dial_error": 0, "refused": 0, "failed": 0}
        self.served = 0
        self._limiter = trio.CapacityLimiter(CONCURRENT_DIALBACKS)
        self._last_asked: dict[ID, float] = {}

    def install(self) -> None:
        self.host.set_handler(PROTOCOL, self._serve)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.install()
        if self.forced in ("public", "private"):
            self._set(Reachability(self.forced))
            task_status.started()
            await trio.sleep_forever()
        task_status.started()
        while True:
            server = self._pick_server()
            if server is not None:
                await self._ask(server)
            await trio.sleep(PROBE_UNKNOWN if self.status == Reachability.UNKNOWN or server is None else RECHECK)

    def _set(self, status: Reachability) -> None:
        if status == self.status:
            return
        log.info("reachability: %s (was %s)", status, self.status)
        self.status = status
        self.since = time.time()
        self._on_change(status)

    def _pick_server(self) -> ID | None:
        """A directly connected peer, the one asked longest ago."""
        network = self.host.libp2p.get_network()
        candidates = []
        for peer in self.host.connected_peers():
            conns = network.get_connections(peer)
            if any(relay_of(conn) is None for conn in conns):
                candidates.append(peer)
        if not candidates:
            return None
        random.shuffle(candidates)
        return min(candidates, key=lambda p: self._last_asked.get(p, 0.0))

    async def _ask(self, server: ID) -> None:
        self._last_asked[server] = time.monotonic()
        addrs = [a.to_bytes() for a in self._addrs()]
        if not addrs:
            return
        request = Message(type=Message.DIAL)
        request.dial.peer.id = self.host.peer_id.to_bytes()
        request.dial.peer.addrs.extend(addrs)
        self.asked += 1
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                stream = await self.host.libp2p.new_stream(server, [PROTOCOL])
                try:
                    await stream.write(encode_varint_prefixed(request.SerializeToString()))
                    reply = _parse(await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE))
                finally:
                    with trio.move_on_after(2):
                        await stream.close()
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            self.answers["failed"] += 1
            log.debug("autonat: asking %s failed: %r", server, exc)
            return
        status = reply.dialResponse.status
        if status == Message.OK:
            self.answers["ok"] += 1
            self._set(self.verdicts.add(True))
        elif status == Message.E_DIAL_ERROR:
            self.answers["dial_error"] += 1
            self._set(self.verdicts.add(False))
        else:
            self.answers["refused"] += 1
        log.debug("autonat: %s says %s", server, Message.ResponseStatus.Name(status))

    # -- server --------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        peer = remote_peer(stream)
        try:
            request = _parse(await _read(stream))
            reply = await self._dial_back(stream, peer, request)
            await stream.write(encode_varint_prefixed(reply.SerializeToString()))
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("autonat request from %s failed: %r", peer, exc)
        finally:
            await close_quietly(stream)

    async def _dial_back(self, stream: INetStream, peer: ID, request: Message) -> Message:
        if request.type != Message.DIAL or request.dial.peer.id not in (b"", peer.to_bytes()):
            return _response(Message.E_BAD_REQUEST, "expected a DIAL for the requesting peer")
        if relay_of(stream.muxed_conn) is not None:
            return _response(Message.E_DIAL_REFUSED, "no dial-backs for requests over relayed connections")
        observed = stream.get_remote_address()
        if not observed:
            return _response(Message.E_DIAL_REFUSED, "cannot tell the requester's address")
        targets = dialback_targets(observed[0], list(request.dial.peer.addrs))
        if not targets:
            return _response(Message.E_DIAL_REFUSED, "no TCP address to dial back")
        self.served += 1
        async with self._limiter:
            for addr in targets:
                try:
                    with trio.fail_after(DIALBACK_TIMEOUT):
                        conn = await libp2p_compat.dial_addr(self.host.libp2p, addr, peer)
                except (trio.TooSlowError, *STREAM_ERRORS, Exception) as exc:  # the swarm raises assorted types
                    log.debug("autonat: dial-back to %s at %s failed: %r", peer, addr, exc)
                    continue
                with trio.move_on_after(2):
                    try:
                        await conn.close()
                    except STREAM_ERRORS:
                        pass
                reply = _response(Message.OK, "")
                reply.dialResponse.addr = addr.to_bytes()
                return reply
        return _response(Message.E_DIAL_ERROR, "dial-back failed")

    def describe(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "since": self.since,
            "forced": self.forced != "auto",
            "asked": self.asked,
            "answers": dict(self.answers),
            "served": self.served,
        }


def dialback_targets(observed_ip: str, raw_addrs: list[bytes]) -> list[multiaddr.Multiaddr]:
    """Where the server may dial: the observed IP with each advertised TCP port (at most MAX_DIALBACKS).

    Pure, so the "only ever the observed IP" rule is unit-tested.
    """
    import ipaddress

    try:
        ip = ipaddress.ip_address(observed_ip)
    except ValueError:
        return []
    family = "ip4" if ip.version == 4 else "ip6"
    out: list[multiaddr.Multiaddr] = []
    seen: set[str] = set()
    for raw in raw_addrs:
        try:
            addr = multiaddr.Multiaddr(raw)
            port = addr.value_for_protocol("tcp")
        except Exception:  # not a multiaddr, or no TCP in it
            continue
        text = f"/{family}/{ip}/tcp/{port}"
        if port and text not in seen and "p2p-circuit" not in str(addr):
            seen.add(text)
            out.append(multiaddr.Multiaddr(text))
    return out[:MAX_DIALBACKS]


def _response(status: int, text: str) -> Message:
    reply = Message(type=Message.DIAL_RESPONSE)
    reply.dialResponse.status = status  # type: ignore[assignment]
    if text:
        reply.dialResponse.statusText = text
    return reply


async def _read(stream: INetStream) -> bytes:
    with trio.fail_after(10):
        return await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE)


def _parse(data: bytes) -> Message:
    msg = Message()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise ValueError("malformed AutoNAT message") from None
    return msg
