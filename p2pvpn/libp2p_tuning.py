"""Two py-libp2p behaviours we change, because each cost every tunnel time; reach-ins live here alone.

1. **yamux credit, once per half window** (as go-yamux does it). py-libp2p
   0.8's ``YamuxStream._auto_tune_and_send_window_update`` answers nearly
   every read with a WINDOW_UPDATE frame (its "partial slack" and "release
   on read" branches). For a VPN tunnel every Data frame is one read, so each
   packet sent cost a second frame back: one more Noise record, TCP segment
   and wake-up of the sender's process per packet, about a third of a ping's
   round trip through two nodes, and most of the throughput lost on a fast
   link (docs/performance.md, "Latency budget", "The bare veth"). We credit
   once half the window has been consumed, keeping py-libp2p's window
   auto-tuning.
2. **No happy-eyeballs wait after the last address.** ``Swarm.dial_peer``
   starts a dial per selected address (at most two) and then waits 250 ms
   for it to *fail* before going on, also after the last one; with
   ``max_connections_per_peer`` above 1 a success does not end the wait,
   so every connection took at least 250 ms. With no delay the (at most
   two) addresses are dialed in parallel and the first connection returns
   at once.

``install`` fails loudly (``CompatError``) when the py-libp2p it finds
lacks what these rely on; tests/session/test_libp2p_tuning.py holds the
canaries.
"""

from __future__ import annotations

from typing import Any

from libp2p.network import swarm
from libp2p.stream_muxer.yamux import yamux

_NEEDED_ATTRS = ("_auto_tune_and_send_window_update", "_apply_autotune_epoch", "send_window_update")
_NEEDED_STATE = ("window_lock", "recv_window", "target_recv_window", "_pending_recv_release")
HAPPY_EYEBALLS_DELAY = 0.0


class CompatError(RuntimeError):
    """The installed py-libp2p is not the one this module was written for."""


async def _credit_in_batches(self: Any, *, bytes_read: int = 0) -> None:
    """Count what the application read; credit it to the peer once it reaches half the window."""
    increment = 0
    async with self.window_lock:
        self._pending_recv_release += bytes_read
        if self._pending_recv_release >= self.target_recv_window // 2:
            increment = self._pending_recv_release
            self._pending_recv_release = 0
            self.recv_window += increment
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            increment += self._apply_autotune_epoch(buffered)  # may grow the window (RTT-based, as before)
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def install() -> None:
    """Apply both changes (idempotent); CompatError if py-libp2p changed underneath."""
    stream_cls = yamux.YamuxStream
    missing = [name for name in _NEEDED_ATTRS if not hasattr(stream_cls, name)]
    missing += [name for name in _NEEDED_STATE if name not in stream_cls.__init__.__code__.co_names]
    if "stream_buffers" not in yamux.Yamux.__init__.__code__.co_names:
        missing.append("Yamux.stream_buffers")
    if not isinstance(getattr(swarm, "_HAPPY_EYEBALLS_DELAY", None), float):
        missing.append("swarm._HAPPY_EYEBALLS_DELAY")
    if missing:
        raise CompatError(f"py-libp2p lacks {', '.join(missing)}; "
                          "p2pvpn.libp2p_tuning needs updating for this py-libp2p version")  # fmt: skip
    stream_cls._auto_tune_and_send_window_update = _credit_in_batches  # type: ignore[method-assign]
    swarm._HAPPY_EYEBALLS_DELAY = HAPPY_EYEBALLS_DELAY  # type: ignore[attr-defined]
