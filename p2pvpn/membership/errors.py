"""The membership layer's one error family."""

from __future__ import annotations

from p2pvpn.errors import P2pvpnError


class MembershipError(P2pvpnError):
    """A certificate, revocation list, invite or membership file is unacceptable; the message says why."""
