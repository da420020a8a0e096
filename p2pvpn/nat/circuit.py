"""Circuit relay v2, client side: reserve on a relay, dial through it, accept relayed connections.

Theory of operation (libp2p specs, relay/circuit-v2.md):

1. Reserve. An unreachable node B opens a ``/libp2p/circuit/relay/0.2.0/hop``
   stream to relay R and sends ``HopMessage{RESERVE}``; R answers
   ``STATUS OK`` with the reservation's expiry and R's own addresses. The
   reservation lives as long as B keeps its connection to R (and until the
   expiry; B renews before). B publishes ``<R addr>/p2p/R/p2p-circuit``.
2. Connect. A opens a hop stream to R and sends ``HopMessage{CONNECT, peer=B}``.
   R opens a ``/libp2p/circuit/relay/0.2.0/stop`` stream to B and sends
   ``StopMessage{CONNECT, peer=A, limit}``; B answers ``STATUS OK``; R
   answers A ``STATUS OK`` and from then on copies bytes between the two
   streams. Both streams are now one byte pipe from A to B.
3. Upgrade. A and B run the ordinary libp2p upgrade over that pipe:
   multistream, Noise (A is the initiator), yamux. The relay only ever sees
   Noise ciphertext; A and B authenticate each other's peer IDs as on any
   connection. The result is a normal swarm connection whose transport
   address is ``/p2p/R/p2p-circuit/p2p/<peer>``.

We implement these few messages ourselves instead of using py-libp2p's
``CircuitV2Transport``: its dialer is not registered with the swarm (the
swarm drops ``/p2p-circuit`` addresses before dialing), it re-reserves on
every dial, and its STOP listener is a second handler fighting
``CircuitV2Protocol``'s for the same protocol ID. The messages are
py-libp2p's generated ``circuit_pb2`` types, used only in this module and
``p2pvpn.roles.relay``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, PeerId, StopMessage
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from p2pvpn import libp2p_compat
from p2pvpn.errors import P2pvpnError
from p2pvpn.host import STREAM_ERRORS, Host, circuit_relay, close_quietly, is_circuit, remote_peer, reset_quietly

log = logging.getLogger(__name__)

HOP_PROTOCOL = TProtocol("/libp2p/circuit/relay/0.2.0/hop")
STOP_PROTOCOL = TProtocol("/libp2p/circuit/relay/0.2.0/stop")
MAX_MESSAGE = 4096           # bytes of one hop/stop message; real ones are a few hundred
MESSAGE_TIMEOUT = 10.0       # seconds to wait for the other side's next message
CONNECT_TIMEOUT = 15.0       # a whole CONNECT exchange, relay's STOP round trip included

# Status codes (circuit v2 Status enum).
OK = 100
RESERVATION_REFUSED = 200
RESOURCE_LIMIT_EXCEEDED = 201
PERMISSION_DENIED = 202
CONNECTION_FAILED = 203
NO_RESERVATION = 204
MALFORMED_MESSAGE = 400
UNEXPECTED_MESSAGE = 401

STATUS_NAMES = {
    OK: "OK", RESERVATION_REFUSED: "RESERVATION_REFUSED", RESOURCE_LIMIT_EXCEEDED: "RESOURCE_LIMIT_EXCEEDED",
    PERMISSION_DENIED: "PERMISSION_DENIED", CONNECTION_FAILED: "CONNECTION_FAILED",
    NO_RESERVATION: "NO_RESERVATION", MALFORMED_MESSAGE: "MALFORMED_MESSAGE",
    UNEXPECTED_MESSAGE: "UNEXPECTED_MESSAGE",
}  # fmt: skip


class CircuitError(P2pvpnError):
    """A relay refused or failed a reservation or a relayed connection."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CircuitLimit:
    """What the relay will carry on one circuit: seconds and bytes, 0 meaning no limit."""

    duration: int = 0
    data: int = 0

    @property
    def unlimited(self) -> bool:
        return self.duration == 0 and self.data == 0

    @classmethod
    def from_pb(cls, msg: HopMessage | StopMessage) -> CircuitLimit:
        if not msg.HasField("limit"):
            return cls()
        return cls(duration=msg.limit.duration, data=msg.limit.data)

    def to_pb(self) -> Limit:
        return Limit(duration=self.duration, data=self.data)


@dataclass(frozen=True)
class Reservation:
    """A slot on a relay: until ``expire`` (Unix s), while our connection to it lives."""

    relay: ID
    expire: int
    relay_addrs: tuple[multiaddr.Multiaddr, ...]  # the relay's addresses, without /p2p
    limit: CircuitLimit

    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our addresses through this relay: ``<relay addr>/p2p/<relay>/p2p-circuit``."""
        return [multiaddr.Multiaddr(f"{a}/p2p/{self.relay}/p2p-circuit") for a in self.relay_addrs]


# -- messages ------------------------------------------------------------------


async def write_msg(stream: INetStream, msg: HopMessage | StopMessage) -> None:
    await stream.write(encode_varint_prefixed(msg.SerializeToString()))


async def read_hop(stream: INetStream, timeout: float = MESSAGE_TIMEOUT) -> HopMessage:
    """One hop message; a malformed one raises ValueError (one of STREAM_ERRORS), a slow one TooSlowError."""
    msg = HopMessage()
    _parse(msg, await _read(stream, timeout))
    return msg


async def read_stop(stream: INetStream, timeout: float = MESSAGE_TIMEOUT) -> StopMessage:
    msg = StopMessage()
    _parse(msg, await _read(stream, timeout))
    return msg


async def _read(stream: INetStream, timeout: float) -> bytes:
    # Reads exactly one message: after it, the same stream carries the relayed connection.
    with trio.fail_after(timeout):
        return await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE)


def _parse(msg: HopMessage | StopMessage, data: bytes) -> None:
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise ValueError(f"malformed {type(msg).__name__}") from None


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"status {code}")


def circuit_addr(relay: ID, peer: ID) -> multiaddr.Multiaddr:
    """How a relayed connection's remote end is named: ``/p2p/<relay>/p2p-circuit/p2p/<peer>``."""
    return multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer}")


# -- reserving ------------------------------------------------------------------


async def reserve(host: Host, relay: ID) -> Reservation:
    """Ask ``relay`` (already connected) for a reservation; CircuitError if it refuses."""
    stream = await host.libp2p.new_stream(relay, [HOP_PROTOCOL])
    try:
        await write_msg(stream, HopMessage(type=HopMessage.RESERVE))
        resp = await read_hop(stream)
    finally:
        await close_quietly(stream)
    if resp.type != HopMessage.STATUS:
        raise CircuitError(f"relay {relay} answered RESERVE with message type {resp.type}")
    if resp.status != OK:
        raise CircuitError(f"relay {relay} refused the reservation: {status_name(resp.status)}", resp.status)
    addrs: list[multiaddr.Multiaddr] = []
    for raw in resp.reservation.addrs:
        try:
            addr = multiaddr.Multiaddr(raw)
        except Exception:  # a relay may send addresses we cannot parse; skip them
            continue
        addr = _without_p2p(addr)
        if addr is not None and not is_circuit(addr):
            addrs.append(addr)
    expire = int(resp.reservation.expire) if resp.HasField("reservation") else 0
    if expire <= time.time():
        raise CircuitError(f"relay {relay} granted a reservation that has already expired")
    return Reservation(relay, expire, tuple(addrs), CircuitLimit.from_pb(resp))


def _without_p2p(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr | None:
    text = str(addr)
    if "/p2p/" in text:
        text = text.split("/p2p/", 1)[0]
    try:
        return multiaddr.Multiaddr(text) if text else None
    except Exception:
        return None


# -- dialing through a relay -------------------------------------------------------


async def connect_via(host: Host, relay: ID, peer: ID) -> CircuitLimit:
    """Open a relayed connection to ``peer`` through ``relay`` (already connected) and upgrade it.

    The connection joins the swarm like any other; streams to ``peer`` use it
    until a direct one exists. Raises CircuitError or a stream error.
    """
    stream = await host.libp2p.new_stream(relay, [HOP_PROTOCOL])
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            await write_msg(stream, HopMessage(type=HopMessage.CONNECT, peer=PeerId(id=peer.to_bytes())))
            resp = await read_hop(stream, CONNECT_TIMEOUT)
            if resp.type != HopMessage.STATUS:
                raise CircuitError(f"relay {relay} answered CONNECT with message type {resp.type}")
            if resp.status != OK:
                raise CircuitError(f"relay {relay} could not connect us to {peer}: {status_name(resp.status)}",
                                   resp.status)
            limit = CircuitLimit.from_pb(resp)
            raw = libp2p_compat.relayed_raw_connection(stream, True, circuit_addr(relay, peer))
            await host.libp2p.upgrade_outbound_connection(raw, peer)
    except BaseException:
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    log.info("relayed connection to %s via %s%s", peer, relay, "" if limit.unlimited else f" (limit {limit})")
    return limit


async def dial(host: Host, peer: ID, addr: multiaddr.Multiaddr) -> None:
    """:data:`p2pvpn.host.RelayDialer`: reach ``peer`` through the relay named in ``addr``.

    ``addr`` is ``<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<peer>]``; we
    connect to the relay first if we are not connected yet.
    """
    relay = circuit_relay(addr)
    if relay is None:
        raise CircuitError(f"{addr} is not a relayed address")
    if relay == host.peer_id:
        raise CircuitError("refusing to relay through ourselves")
    head = str(addr).split(f"/p2p/{relay}", 1)[0]
    base = multiaddr.Multiaddr(head) if head else None
    if relay not in host.connected_peers():
        if base is None:
            raise CircuitError(f"{addr} names relay {relay} without an address, and we are not connected to it")
        await host.connect(relay, [base])
    await connect_via(host, relay, peer)


# -- being dialed through a relay ---------------------------------------------------


class StopHandler:
    """Accepts relayed connections: the ``/libp2p/circuit/relay/0.2.0/stop`` side.

    ``accept(relay, peer)`` may refuse a connection before its upgrade
    (e.g. we hold no reservation on that relay); ``on_relayed`` hears of
    each accepted one (the hole puncher starts from there).
    """

    def __init__(
        self,
        host: Host,
        accept: Callable[[ID, ID], bool] = lambda relay, peer: True,
        on_relayed: Callable[[ID, ID, CircuitLimit], None] | None = None,
    ) -> None:
        self.host = host
        self._accept = accept
        self._on_relayed = on_relayed
        self.accepted = 0
        self.refused = 0

    def install(self) -> None:
        self.host.set_handler(STOP_PROTOCOL, self.handle)

    async def handle(self, stream: INetStream) -> None:
        relay = remote_peer(stream)
        try:
            msg = await read_stop(stream)
            if msg.type != StopMessage.CONNECT or not msg.HasField("peer"):
                await write_msg(stream, StopMessage(type=StopMessage.STATUS, status=UNEXPECTED_MESSAGE))
                await stream.reset()
                return
            peer = ID(msg.peer.id)
            if not self._accept(relay, peer):
                self.refused += 1
                await write_msg(stream, StopMessage(type=StopMessage.STATUS, status=PERMISSION_DENIED))
                await stream.reset()
                return
            limit = CircuitLimit.from_pb(msg)
            await write_msg(stream, StopMessage(type=StopMessage.STATUS, status=OK))
            addr = circuit_addr(relay, peer)
            raw = libp2p_compat.relayed_raw_connection(stream, False, addr)
            await self.host.libp2p.upgrade_inbound_connection(raw, addr)
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("relayed connection via %s failed: %r", relay, exc)
            await reset_quietly(stream)
            return
        self.accepted += 1
        log.info("accepted relayed connection from %s via %s", peer, relay)
        if self._on_relayed is not None:
            self._on_relayed(relay, peer, limit)
