"""py-libp2p's yamux, credited the way go-yamux does it: one WINDOW_UPDATE per half window.

Why: py-libp2p 0.8's ``YamuxStream._auto_tune_and_send_window_update``
answers nearly every read with a WINDOW_UPDATE frame (its "partial slack"
and "release on read" branches). For a VPN tunnel every Data frame is one
read, so each packet sent cost a second frame back: one more Noise record,
TCP segment and wake-up of the sender's process per packet, about a third
of a ping's round trip through two nodes (docs/performance.md, "Latency
budget"). go-yamux sends an update once half the window has been consumed;
we do the same, keeping py-libp2p's window auto-tuning.

This replaces one private method, so it lives here alone and ``install``
fails loudly (``CompatError``) when the py-libp2p it finds lacks what it
relies on; tests/session/test_window_updates.py is its canary.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux import yamux

_NEEDED_ATTRS = ("_auto_tune_and_send_window_update", "_apply_autotune_epoch", "send_window_update")
_NEEDED_STATE = ("window_lock", "recv_window", "target_recv_window", "_pending_recv_release")


class CompatError(RuntimeError):
    """The installed py-libp2p's yamux is not the one this module was written for."""


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
    """Replace yamux's per-read crediting (idempotent); CompatError if py-libp2p changed underneath."""
    stream_cls = yamux.YamuxStream
    if stream_cls._auto_tune_and_send_window_update is _credit_in_batches:
        return
    missing = [name for name in _NEEDED_ATTRS if not hasattr(stream_cls, name)]
    missing += [name for name in _NEEDED_STATE if name not in stream_cls.__init__.__code__.co_names]
    if "stream_buffers" not in yamux.Yamux.__init__.__code__.co_names:
        missing.append("Yamux.stream_buffers")
    if missing:
        raise CompatError(f"py-libp2p's yamux lacks {', '.join(missing)}; "
                          "p2pvpn.compat_yamux needs updating for this py-libp2p version")  # fmt: skip
    stream_cls._auto_tune_and_send_window_update = _credit_in_batches  # type: ignore[method-assign]
