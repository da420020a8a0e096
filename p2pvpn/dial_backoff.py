"""Which peer addresses not to dial now: addresses that cannot work from here, and ones that just failed so.

Theory of operation
-------------------
py-libp2p dials every address a peer told it about, again on every
connect, and each failure logs a line. Some addresses cannot work from
this node at all: another member's LAN address seen from behind a NAT fails
at once with ``EADDRNOTAVAIL`` (``[Errno 99]``, the hole-punch dial from our
listen port), ``ENETUNREACH`` or ``EHOSTUNREACH``. :class:`DialBackoff` is
consulted before each dial of one address (p2pvpn.libp2p_compat hooks it
under the swarm's per-address dial) and answers with a reason to skip, or
None to dial:

1. **scope**: an unspecified address (0.0.0.0, ::), a multicast one, an IPv6
   link-local one (no zone in a multiaddr), or a loopback one while we do not
   listen on loopback ourselves, never reaches another host: ``"scope"``.
2. **backoff**: an address whose last dial failed with one of
   :data:`UNREACHABLE` waits ``BASE`` s, doubling per further such failure up
   to ``CAP`` s, before it is dialed again: ``"backoff"``. A successful dial
   forgets it. Other failures (refused, timed out: a peer restarting) do not
   count here: the tunnel supervisor already retries peers with backoff, and
   a restarting peer must be redialed as soon as it is back.

Every skip is counted by reason, for ``status``. Sans-IO: the clock is a
parameter, so it is unit-tested without a network.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

UNREACHABLE = frozenset({errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EHOSTUNREACH})
BASE = 10.0  # seconds an address waits after its first unreachable failure
CAP = 600.0
MAX_ADDRS = 1024  # addresses remembered; the oldest is forgotten first
_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")
_CHAIN_LIMIT = 32  # exceptions looked at per failure (causes, contexts, group members)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its cause chain or group) says the address is unreachable from here.

    py-libp2p wraps the OSError in OpenConnectionError and then SwarmException;
    the errno survives as ``__cause__`` or, failing that, in the message text.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < _CHAIN_LIMIT:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in UNREACHABLE:
            return True
        if any(int(code) in UNREACHABLE for code in _ERRNO_RE.findall(str(cur))):
            return True
        todo += [e for e in (cur.__cause__, cur.__context__) if e is not None]
        todo += list(getattr(cur, "exceptions", ()) or ())  # exception groups, trio's MultiError
    return False


def address_host(addr: str) -> str | None:
    """The IP literal of ``/ip4/<ip>/...`` or ``/ip6/<ip>/...``; None for DNS names, circuits and the like."""
    parts = addr.split("/")
    if len(parts) >= 3 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


class DialBackoff:
    """Per-address dial policy: :meth:`verdict` before a dial, :meth:`record` after it."""

    def __init__(
        self,
        *,
        local_loopback: bool = False,
        base: float = BASE,
        cap: float = CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local_loopback = local_loopback
        self.base, self.cap, self.clock = base, cap, clock
        self._waits: OrderedDict[str, tuple[float, int]] = OrderedDict()  # addr -> (retry at, failures)
        self.skipped: Counter[str] = Counter()

    def verdict(self, addr: Any) -> str | None:
        """None to dial ``addr`` now, else why not (counted)."""
        text = str(addr)
        reason = self._scope(text)
        if reason is None:
            entry = self._waits.get(text)
            if entry is not None and self.clock() < entry[0]:
                reason = "backoff"
        if reason is not None:
            self.skipped[reason] += 1
        return reason

    def record(self, addr: Any, error: BaseException | None) -> None:
        """The outcome of a dial of ``addr``: None for success."""
        text = str(addr)
        if error is None:
            self._waits.pop(text, None)
            return
        if not unreachable(error):
            return
        failures = self._waits.pop(text, (0.0, 0))[1] + 1
        wait = min(self.cap, self.base * 2 ** (failures - 1))
        self._waits[text] = (self.clock() + wait, failures)
        while len(self._waits) > MAX_ADDRS:
            self._waits.popitem(last=False)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {"skipped": dict(self.skipped), "backing_off": sum(1 for at, _ in self._waits.values() if at > now)}

    def _scope(self, addr: str) -> str | None:
        host = address_host(addr)
        if host is None:
            return None
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        if ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local):
            return "scope"
        if ip.is_loopback and not self.local_loopback:
            return "scope"
        return None
