"""One tunnel: a libp2p stream between two peers speaking /p2pvpn/tunnel/1.0.0.

Theory of operation: after the Hello exchange (``handshake``) the tunnel
runs three tasks in its own nursery: the receive loop (dataplane.ingress),
the keepalive loop, and, once the session manager makes this tunnel the
peer's active one, the send loop (dataplane.egress). With a datagram path
(``link``, docs/protocol.md §16) a fourth task runs its probes and rekeys;
its offers arrive here as control frames. Any of them ending
ends the tunnel. ``close`` may be called from anywhere; it records why, and
the tunnel sends a Close frame and shuts the stream on its way out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from p2pvpn import libp2p_compat
from p2pvpn.dataplane.egress import RELAYED_FRAME_GAP, send_to_peer
from p2pvpn.dataplane.ingress import READ_SIZE, receive_from_peer
from p2pvpn.host import STREAM_ERRORS, describe_path
from p2pvpn.routing import RouteTable
from p2pvpn.session.handshake import HandshakeError, RemoteParams, check_hello, datagram_agreed, offload_agreed
from p2pvpn.session.peer import Peer
from p2pvpn.tun.device import TunDevice
from p2pvpn.wire.codec import (
    DATAGRAM_CAPABILITY, DatagramOffer, fit_reason, Close, CloseCode, Frame, FrameDecoder, Hello, Keepalive, ProtocolError, encode,
)

if TYPE_CHECKING:
    from p2pvpn.membership.view import MembershipView
    from p2pvpn.session.udp_link import UdpLink

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
DEAD_AFTER_KEEPALIVES = 4
MAX_PENDING_PINGS = 8
WRITE_TIMEOUT = 10.0
RETIRE_GRACE = 3.0


class WriteTimeout(trio.TooSlowError):
    """A write to the peer did not finish within WRITE_TIMEOUT: it stopped reading (or its path died).

    The write was cut short, so the stream may hold half a frame: the
    tunnel is closed by a reset, never by another write (no Close frame).
    """


class Tunnel:
    def __init__(self, stream: INetStream, remote_id: ID, initiator: ID) -> None:
        self.stream = stream
        self.remote_id = remote_id
        self.initiator = initiator
        self.created = time.monotonic()
        self.path: dict[str, Any] = describe_path(stream)
        self.rtt: float | None = None
        self.last_reply: float | None = None  # trio time of the last keepalive reply (exit selection's probe)
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self.remote_close: Close | None = None
        self.offload = False  # both Hellos carried gso/1: Data may use offload_packets
        self.too_big: Callable[[bytes, int], None] | None = None  # told of packets over the peer's MTU
        self.destination_ok: Callable[[bytes], bool] | None = None  # ingress destination check
        self.firewall: Any = None  # ingress policy check (p2pvpn.policy.firewall.Firewall), owned networks only
        self.failure: str | None = None  # kind of failure that ended the tunnel, for the node's ``failures``
        self.write_failed = False  # a write timed out: nothing more may be written, the stream gets reset
        self.datagram_agreed = False  # both Hellos listed udp/1 and the connection is direct (§16.1)
        self.udp_announced = False  # our Hello listed udp/1: a DatagramOffer is no protocol error
        self.link: UdpLink | None = None  # the datagram path, when both Hellos listed udp/1 on a direct connection
        self._decoder = FrameDecoder()
        self._write_lock = trio.Lock()
        self._active = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None
        self._retiring = trio.Event()
        self._close_sent = False
        self._last_rx = trio.current_time()
        self._ping_seq = 0
        self._pings: dict[int, float] = {}
        self._echoes: dict[int, trio.Event] = {}  # keepalive seqs `p2pvpn ping` waits on (echo)

    async def write(self, data: bytes) -> None:
        """Serialise writers (send loop, keepalives) and never cancel a write halfway.

        A write cut short by cancellation would leave a partial noise/yamux
        frame on the connection and corrupt every stream on it, so writes are
        shielded and bounded by their own timeout instead.
        """
        if self.write_failed:
            raise WriteTimeout("an earlier write timed out; the stream is unusable")
        async with self._write_lock:
            with trio.CancelScope(shield=True):
                try:
                    with trio.fail_after(WRITE_TIMEOUT):
                        await self.stream.write(data)
                except trio.TooSlowError:
                    self.write_failed = True
                    raise WriteTimeout(f"a write to the peer did not finish within {WRITE_TIMEOUT:g} s") from None
                except STREAM_ERRORS as exc:
                    if not libp2p_compat.is_send_window_timeout(exc):
                        raise
                    self.write_failed = True  # the same stall, caught by py-libp2p's yamux first (5 s)
                    raise WriteTimeout("the peer granted no send window for 5 s (it stopped reading)") from None

    async def handshake(self, hello: Hello, network: str, membership: MembershipView | None = None) -> RemoteParams:
        """Send our Hello, read theirs and judge it; raises HandshakeError/ProtocolError or a stream error.

        No Hello within HANDSHAKE_TIMEOUT is Close(HELLO_TIMEOUT) (docs/protocol.md §7.1).
        """
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await self.write(encode(hello))
                while (frame := self._decoder.next_frame()) is None:
                    data = await self.stream.read(READ_SIZE)
                    if not data:
                        raise ProtocolError("stream closed during handshake")
                    self._decoder.feed(data)
        except WriteTimeout:
            raise
        except trio.TooSlowError:
            raise HandshakeError(CloseCode.HELLO_TIMEOUT, f"no Hello within {HANDSHAKE_TIMEOUT:g} s") from None
        if isinstance(frame, Close):
            raise HandshakeError(CloseCode.PROTOCOL_ERROR, f"peer refused the tunnel: {_describe_close(frame)}")
        params = check_hello(frame, self.remote_id.to_bytes(), network, membership)
        self.offload = offload_agreed(hello, params)
        self.udp_announced = DATAGRAM_CAPABILITY in hello.capabilities
        self.datagram_agreed = datagram_agreed(hello, params) and self.path.get("path") == "direct"
        return params

    def activate(self) -> None:
        """Make this the peer's tunnel for outbound packets."""
        self._active.set()

    def close(self, code: CloseCode, reason: str = "") -> None:
        """End the tunnel now (errors, timeouts, shutdown)."""
        self._record(code, reason)
        if self._scope is not None:
            self._scope.cancel()

    def retire(self, code: CloseCode, reason: str = "") -> None:
        """End the tunnel without losing frames in flight (duplicate resolution).

        We stop sending, send Close, and keep delivering what the peer already
        sent until it closes too, or RETIRE_GRACE seconds pass.
        """
        self._record(code, reason)
        self._retiring.set()
        if self._scope is None:
            return
        if self._send_scope is not None:
            self._send_scope.cancel()

    def _record(self, code: CloseCode, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason

    async def run(self, peer: Peer, routes: RouteTable[ID], tun: TunDevice, keepalive: float) -> None:
        """Carry traffic until the stream fails, the peer closes, or ``close``/``retire`` is called."""
        try:
            with trio.CancelScope() as self._scope:
                if self.close_code is not None and not self._retiring.is_set():
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._receive, peer, routes, tun, nursery.cancel_scope)
                    nursery.start_soon(self._keepalive, peer, keepalive)
                    nursery.start_soon(self._send, peer, tun)
                    nursery.start_soon(self._retire_when_asked)
                    if self.link is not None:
                        nursery.start_soon(self._datagram_timers, self.link)
        finally:
            if self.link is not None:
                self.link.close()
            await self.shutdown()

    async def _datagram_timers(self, link: UdpLink) -> None:
        try:
            await link.run()
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            if isinstance(exc, WriteTimeout):
                self._write_timed_out(exc)
            self._note_gone(f"datagram offer write failed: {type(exc).__name__}")
            if self._scope is not None:
                self._scope.cancel()

    async def _retire_when_asked(self) -> None:
        await self._retiring.wait()
        try:
            await self._send_close()
            await self.stream.close()  # half-close: the peer sees EOF after our Close
        except (trio.TooSlowError, *STREAM_ERRORS):
            pass  # the peer is gone; the receive loop will notice too
        await trio.sleep(RETIRE_GRACE)
        if self._scope is not None:
            self._scope.cancel()

    async def _receive(self, peer: Peer, routes: RouteTable[ID], tun: TunDevice, scope: trio.CancelScope) -> None:
        async def on_control(frame: Frame) -> None:
            await self._on_control(frame)

        try:
            await receive_from_peer(self.stream, self._decoder, peer, routes, tun, on_control, self.offload,
                                    self.destination_ok, self.firewall)
        except ProtocolError as exc:
            self.close(CloseCode.PROTOCOL_ERROR, str(exc))
        except WriteTimeout as exc:  # a keepalive reply the peer would not take (it stopped reading)
            self._write_timed_out(exc)
        except STREAM_ERRORS as exc:
            self._note_gone(f"stream ended: {type(exc).__name__}")
        else:
            self._note_gone("stream ended")
        scope.cancel()

    async def _on_control(self, frame: Frame) -> None:
        self._last_rx = trio.current_time()
        if isinstance(frame, Keepalive):
            if frame.reply:
                sent = self._pings.pop(frame.seq, None)
                if (echo := self._echoes.get(frame.seq)) is not None:
                    echo.set()
                if sent is not None:
                    self.last_reply = trio.current_time()
                    self.rtt = self.last_reply - sent
            else:
                await self.write(encode(Keepalive(seq=frame.seq, reply=True)))
        elif isinstance(frame, DatagramOffer):
            if self.link is not None:
                await self.link.on_offer(frame)  # a broken epoch rule raises DatagramError, a ProtocolError
            elif not self.udp_announced:
                raise ProtocolError("DatagramOffer, but we did not announce udp/1")
            # else: we announced udp/1 but use no datagram path here (relayed): ignored (§16.1)
        elif isinstance(frame, Close):
            self.remote_close = frame
            self._note_gone(f"peer closed the tunnel: {_describe_close(frame)}")
            if self._scope is not None:
                self._scope.cancel()
        else:
            raise ProtocolError(f"unexpected {type(frame).__name__} after the handshake")

    async def _keepalive(self, peer: Peer, interval: float) -> None:
        frames_seen = peer.stats.frames_in
        try:
            while True:
                await trio.sleep(interval)
                now = trio.current_time()
                if peer.stats.frames_in != frames_seen:  # data counts as a sign of life too
                    frames_seen = peer.stats.frames_in
                    self._last_rx = now
                if now - self._last_rx > DEAD_AFTER_KEEPALIVES * interval:
                    self.close(CloseCode.TIMEOUT, f"nothing received for {now - self._last_rx:.0f} s")
                    return
                await self.probe()
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            if isinstance(exc, WriteTimeout):
                self._write_timed_out(exc)
            self._note_gone(f"keepalive failed: {type(exc).__name__}")
            if self._scope is not None:
                self._scope.cancel()

    async def probe(self) -> None:
        """Send a keepalive request now; its reply updates ``rtt`` and ``last_reply``.

        The keepalive loop calls it every interval; exit selection calls it
        more often for the exits it considers, to notice a dead one fast.
        """
        self._ping_seq += 1
        self._pings[self._ping_seq] = trio.current_time()
        if len(self._pings) > MAX_PENDING_PINGS:
            self._pings.pop(min(self._pings))
        await self.write(encode(Keepalive(seq=self._ping_seq)))

    async def echo(self, timeout: float) -> float | None:
        """One keepalive request for `p2pvpn ping`: its round trip in seconds, or None after ``timeout``."""
        self._ping_seq += 1
        seq = self._ping_seq
        self._echoes[seq] = answered = trio.Event()
        try:
            sent = trio.current_time()
            self._pings[seq] = sent
            await self.write(encode(Keepalive(seq=seq)))
            with trio.move_on_after(timeout):
                await answered.wait()
                return trio.current_time() - sent
            return None
        finally:
            del self._echoes[seq]

    async def _send(self, peer: Peer, tun: TunDevice) -> None:
        with trio.CancelScope() as self._send_scope:
            if self._retiring.is_set():
                return
            await self._active.wait()
            try:
                gap = RELAYED_FRAME_GAP if self.path.get("path") == "relayed" else 0.0
                await send_to_peer(peer, self.write, tun.offload, self.offload, frame_gap=gap, too_big=self.too_big,
                                   datagram=self.link)
            except (trio.TooSlowError, *STREAM_ERRORS) as exc:
                if isinstance(exc, WriteTimeout):
                    self._write_timed_out(exc)
                self._note_gone(f"write failed: {type(exc).__name__}")
                if self._scope is not None:
                    self._scope.cancel()

    def _write_timed_out(self, exc: WriteTimeout) -> None:
        """The peer took no data for WRITE_TIMEOUT: end this tunnel only, counted as tunnel_write_timeout."""
        self.failure = "tunnel_write_timeout"
        self.close(CloseCode.TIMEOUT, str(exc))

    def _note_gone(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason

    async def _send_close(self) -> None:
        if self.close_code is not None and self.remote_close is None and not self._close_sent:
            self._close_sent = True
            await self.write(encode(Close(code=int(self.close_code), reason=fit_reason(self.close_reason))))

    async def shutdown(self) -> None:
        """Tell the peer why (if we chose to close), then close the stream; bounded in time.

        After a write timeout the stream may end in half a frame, so it is reset instead.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                if self.write_failed:
                    await self.stream.reset()
                    return
                await self._send_close()
                await self.stream.close()
            except (trio.TooSlowError, *STREAM_ERRORS):
                pass  # the peer is gone already; nothing left to tell it


def _describe_close(frame: Close) -> str:
    try:
        name = CloseCode(frame.code).name
    except ValueError:
        name = f"code {frame.code}"
    return f"{name}: {frame.reason}" if frame.reason else name
