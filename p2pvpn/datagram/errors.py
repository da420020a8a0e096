"""The datagram layer's one error family: a broken offer or epoch rule (protocol error on the tunnel)."""

from __future__ import annotations

from p2pvpn.wire.codec import ProtocolError


class DatagramError(ProtocolError):
    """The peer broke a datagram-path rule (docs/protocol.md §16): Close(PROTOCOL_ERROR)."""
