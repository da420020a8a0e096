"""One tunnel's datagram path at run time: offers on the stream, probes and data on the UDP socket.

The glue between a Tunnel (the stream, the control channel), the node's
DatagramSocket and the sans-IO DatagramSession (docs/protocol.md §16).
A link exists only on a tunnel where both Hellos listed ``udp/1`` and the
connection is direct; the tunnel's send loop asks ``usable`` per batch and
hands packets to ``send_packets`` instead of the stream, and the TUN reader
hands a packet for an idle queue to ``send_now`` (p2pvpn.dataplane.egress).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2pvpn.datagram.epochs import Epoch, KeySchedule
from p2pvpn.datagram.path import Endpoint, PathState
from p2pvpn.datagram.session import DatagramSession
from p2pvpn.datagram.udp_socket import DatagramSocket, Deliver
from p2pvpn.wire.codec import DatagramOffer, encode

log = logging.getLogger(__name__)

MAX_TIMER_SLEEP = 0.5  # seconds: rekey and grace checks need no finer clock


class UdpLink:
    def __init__(self, sock: DatagramSocket, initiator: bool, own_id: bytes, peer_id: bytes, remote_host: str | None,
                 write: Callable[[bytes], Awaitable[None]], deliver: Deliver) -> None:
        self.sock = sock
        self.session = DatagramSession(KeySchedule(initiator, own_id, peer_id, sock.port, sock.allocate_index))
        self._remote_host = remote_host
        self._write = write
        self._deliver = deliver
        self._registered: set[int] = set()
        self._echoes: dict[bytes, trio.Event] = {}  # probe ids `p2pvpn ping` waits on
        self.direct_packets = 0    # sent by the TUN reader itself (egress step 3')
        self.direct_fallbacks = 0  # direct sends that found the buffer full (or an error): queued instead

    # -- control (on the stream) -------------------------------------------------

    async def start(self) -> None:
        """Our epoch-1 offer, unless the peer's came first and we already answered it."""
        keys = self.session.keys
        if keys.current is None and keys.pending_index is None:
            offer = keys.start()
            self.sock.pending(offer.receiver_index, self.session)
            await self._write(encode(offer))

    async def on_offer(self, offer: DatagramOffer) -> None:
        """The peer's offer: install the epoch when complete, answer if we are the responder (DatagramError up)."""
        now = trio.current_time()
        installed = self.session.keys.receive_offer(offer, now)
        if installed.epoch is not None:
            self._register(installed.epoch, now)
        self.session.path.set_candidates(self._candidates(offer), now)
        if installed.reply is not None:
            await self._write(encode(installed.reply))

    def _register(self, epoch: Epoch, now: float) -> None:
        """Our index of ``epoch`` now opens datagrams; what arrived for it early (held) is opened now."""
        self.sock.register(self.session, epoch, self._deliver, now)
        self._registered.add(epoch.recv_index)

    def _candidates(self, offer: DatagramOffer) -> list[Endpoint]:
        """(connection's remote IP, port) first, then the offer's endpoints, within the address scope rules."""
        out: list[Endpoint] = []
        loopback_ok = False
        if self._remote_host is not None:
            try:
                remote = ipaddress.ip_address(self._remote_host)
            except ValueError:
                remote = None
            if remote is not None and _usable(remote, True):
                out.append((str(remote), offer.port))
                loopback_ok = remote.is_loopback
        for raw in offer.endpoints:
            address = ipaddress.ip_address(raw[:-2])
            if _usable(address, loopback_ok):
                out.append((str(address), int.from_bytes(raw[-2:], "big")))
        return [e for e in out if self.sock.accepts(e[0])]  # what our socket can reach (dual-stack: all)

    # -- timers (probes, keepalives, rekey, grace) -------------------------------

    async def run(self) -> None:
        """Until cancelled: start epoch 1, then probe, rekey and expire old keys on time."""
        await self.start()
        session = self.session
        keys = session.keys
        while True:
            now = trio.current_time()
            if (offer := keys.rekey_due(now)) is not None:
                self.sock.pending(offer.receiver_index, self.session)
                await self._write(encode(offer))
            if (old := keys.expire(now)) is not None:
                self.sock.release(old.recv_index)
                self._registered.discard(old.recv_index)
            was = session.path.state
            for endpoint, datagram in session.due_probes(now):
                await self.sock.send(endpoint, [datagram])
            if session.path.state is not was:
                log.info("datagram path %s: nothing authenticated came back in time; data back on the stream",
                         session.path.state)
            wake = session.path.next_wakeup(now) if keys.current is not None else math.inf
            await trio.sleep_until(max(now + 0.01, min(wake, now + MAX_TIMER_SLEEP)))

    # -- data ------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.session.usable

    async def send_packets(self, packets: list[bytes]) -> None:
        session = self.session
        endpoint = session.path.endpoint
        if endpoint is None:
            return
        await self.sock.send(endpoint, session.seal_packets(packets, trio.current_time()))

    def send_now(self, packets: list[bytes]) -> int:
        """Seal and send ``packets`` without waiting (the TUN reader's direct send): how many went, a prefix.

        The rest found the socket buffer full or an error; the caller queues
        them for the send loop (counted here as ``direct_fallbacks``). Their
        counters are spent: a gap in the sequence is a lost datagram to the
        receiver's replay window, nothing more."""
        session = self.session
        endpoint = session.path.endpoint
        if endpoint is None:
            return 0
        sent = self.sock.send_now(endpoint, session.seal_packets(packets, trio.current_time()))
        unsent = len(packets) - sent
        session.tx_packets -= unsent  # the send loop seals them again and counts them then
        self.direct_packets += sent
        self.direct_fallbacks += unsent
        return sent

    async def echo(self, timeout: float) -> float | None:
        """One probe to the endpoint for `p2pvpn ping`: the reply's round trip in seconds, or None.

        None at once when the path is not ``udp`` (no endpoint, no keys).
        """
        session = self.session
        endpoint = session.path.endpoint
        probe_id = os.urandom(8)
        datagram = session.probe(probe_id=probe_id)
        if endpoint is None or datagram is None:
            return None
        self._echoes[probe_id] = answered = trio.Event()
        session.on_probe_reply = self._on_probe_reply
        try:
            sent = trio.current_time()
            await self.sock.send(endpoint, [datagram])
            with trio.move_on_after(timeout):
                await answered.wait()
                return trio.current_time() - sent
            return None
        finally:
            del self._echoes[probe_id]

    def _on_probe_reply(self, probe_id: bytes) -> None:
        if (answered := self._echoes.get(probe_id)) is not None:
            answered.set()

    def close(self) -> None:
        """The tunnel ended: forget every key and index at once (§16.4)."""
        keys = self.session.keys
        for index in self._registered:
            self.sock.release(index)
        if keys.pending_index is not None:
            self.sock.release(keys.pending_index)
        self.session.take_held(math.inf)  # what was held for the pending epoch goes with it
        self._registered.clear()
        keys.current = keys.previous = None

    def describe(self) -> dict[str, Any]:
        session = self.session
        endpoint = session.path.endpoint if session.path.state is PathState.UDP else None
        return {
            "data_path": str(session.path.state),
            "udp_endpoint": _endpoint_text(endpoint),
            "udp_epoch": session.keys.number,
            "udp_tx_packets": session.tx_packets,
            "udp_rx_packets": session.rx_packets,
            "udp_direct_packets": self.direct_packets,
            "udp_direct_fallbacks": self.direct_fallbacks,
        }


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback_ok: bool) -> bool:
    if address.is_unspecified or address.is_multicast or (address.is_loopback and not loopback_ok):
        return False
    return not (isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"))


def _endpoint_text(endpoint: Endpoint | None) -> str | None:
    if endpoint is None:
        return None
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
