"""One error family per layer, each carrying a one-line message a user can act on.

The CLI prints ``str(error)`` for any :class:`P2pvpnError` and exits non-zero;
anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class P2pvpnError(Exception):
    """Base of every error meant to be shown to a user as one line."""

    exit_code: int = 1


class ConfigError(P2pvpnError):
    """The configuration file or a flag is wrong."""

    exit_code = 2


class IdentityError(P2pvpnError):
    """The identity key is missing, unreadable, or has unsafe permissions."""


class TunError(P2pvpnError):
    """The TUN device could not be created or configured."""


class ControlError(P2pvpnError):
    """The local control socket could not be reached or answered badly."""


class NetworkSetupError(P2pvpnError):
    """The libp2p host could not start (e.g. address in use)."""
