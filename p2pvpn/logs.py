"""One log format for p2pvpn and the libraries under it, one line per record, levels an operator filters.

Theory of operation
-------------------
Every record, ours or py-libp2p's, goes through one handler on the root
logger and comes out as one line::

    2026-11-30 15:04:05,123 WARNING p2pvpn.session.manager: tunnel_error (12D3…): EOF
    <asctime, local time>   <level> <logger>:              <message; newlines become " | ">

An exception attached to a record is appended to the same line as
``| Type: message`` (the traceback only at ``debug``). Under systemd
(``JOURNAL_STREAM`` set) the timestamp is left to journald and the line
starts with the syslog priority (``<4>p2pvpn.node: ...``), which journald
turns into the entry's level.

``--log-level`` (config ``log_level``: debug, info, warning, error) sets the
handler's threshold for everyone. The libraries get two more rules:

* **demoted**: records py-libp2p writes at warning or error for things that
  are routine in a VPN mesh (a peer that does not speak the DHT protocol, a
  stream to a peer that just went away) become debug records
  (:data:`p2pvpn.libp2p_compat.ROUTINE_LIBP2P_LOGS` names them, with a
  canary each);
* **rate-limited**: any other library record at warning or above is shown at
  most :data:`BURST` times per :data:`WINDOW` seconds per (logger, message
  template); the next one shown says how many were suppressed.

At ``debug`` neither rule applies: everything is shown.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
# Loggers of libraries under us; their own defaults (py-libp2p's import-time setup) are undone.
LIBRARIES = ("libp2p", "multiaddr", "aioquic", "trio", "asyncio")
BURST = 5  # library warnings shown per (logger, template) per WINDOW
WINDOW = 60.0
MAX_KEYS = 1024  # (logger, template) pairs the rate limiter remembers; bounded
SEPARATOR = " | "


def one_line(text: str) -> str:
    """``text`` with its line breaks replaced by :data:`SEPARATOR`, blank lines and indentation dropped."""
    parts = [part.strip() for part in text.splitlines()]
    return SEPARATOR.join(part for part in parts if part)


class OneLineFormatter(logging.Formatter):
    """``FORMAT`` on one line: the message and any exception folded with " | "."""

    def __init__(self, fmt: str = FORMAT, *, tracebacks: bool = False) -> None:
        super().__init__(fmt)
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        # Format a copy: other handlers (pytest's caplog, say) must still see the original record.
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg, copy.args = one_line(record.getMessage()), None
        copy.exc_info, copy.exc_text, copy.stack_info = None, None, None
        line = super().format(copy)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if self.tracebacks:
                line += SEPARATOR + one_line(self.formatException(record.exc_info))
            else:
                line += SEPARATOR + one_line(f"{type(exc).__name__}: {exc}")
        return line


class JournalFormatter(OneLineFormatter):
    """``<priority>logger: message``: journald reads the syslog priority and adds its own timestamp."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__(JOURNAL_FORMAT, tracebacks=tracebacks)

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def _is_library(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARIES)


class Demote(logging.Filter):
    """Turn routine library records into debug records, and drop them below ``threshold``.

    ``rules`` are (logger prefix, text the message starts with or contains).
    A handler's level is checked before its filters, so the handler keeps
    level NOTSET and this filter applies ``threshold`` to everyone, and
    ``library_threshold`` (if higher) to the libraries' loggers.
    """

    def __init__(self, threshold: int, rules: Iterable[tuple[str, str]], library_threshold: int | None = None) -> None:
        super().__init__()
        self.threshold = threshold
        self.rules = tuple(rules)
        # Libraries' own thresholds: some py-libp2p modules set their logger to INFO explicitly, so the
        # level of the "libp2p" logger alone does not keep their chatter out.
        self.library_threshold = max(threshold, library_threshold or threshold)
        self.demoted = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and self._routine(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            self.demoted += 1
        if _is_library(record.name):
            return record.levelno >= self.library_threshold
        return record.levelno >= self.threshold

    def _routine(self, record: logging.LogRecord) -> bool:
        name = record.name
        for prefix, text in self.rules:
            if name == prefix or name.startswith(prefix + "."):
                if text in record.getMessage():
                    return True
        return False


class RateLimit(logging.Filter):
    """At most ``burst`` library records at warning+ per (logger, template) per ``window`` seconds.

    The first record let through after a suppression says how many were
    dropped. p2pvpn's own records are never limited. ``clock`` is injectable
    for tests.
    """

    def __init__(self, burst: int = BURST, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count, suppressed]
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _is_library(record.name):
            return True
        now = self.clock()
        key = (record.name, str(record.msg)[:200])  # the template, so "peer A" and "peer B" count together
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window:
            dropped = int(state[2]) if state is not None else 0
            if state is None and len(self._seen) >= MAX_KEYS:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = [now, 1, 0]
            if dropped:
                self._note(record, dropped)
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        self.suppressed += 1
        return False

    def _note(self, record: logging.LogRecord, dropped: int) -> None:
        record.msg = f"{record.getMessage()} (and {dropped} similar in the last {self.window:g} s, not shown)"
        record.args = None


def handler(level: str, stream: TextIO, *, journal: bool | None = None) -> logging.Handler:
    """A stream handler with our format (journald's under systemd) and both library rules."""
    from p2pvpn.libp2p_compat import ROUTINE_LIBP2P_LOGS  # the texts belong to py-libp2p: canaries there

    if journal is None:
        journal = bool(os.environ.get("JOURNAL_STREAM"))
    debug = level == "debug"
    out = logging.StreamHandler(stream)
    out.setFormatter(JournalFormatter(tracebacks=debug) if journal else OneLineFormatter(tracebacks=debug))
    threshold = getattr(logging, level.upper())
    out.addFilter(Demote(threshold, () if debug else ROUTINE_LIBP2P_LOGS, None if debug else logging.WARNING))
    if not debug:
        out.addFilter(RateLimit())
    return out


def install(level: str, stream: TextIO | None = None, *, journal: bool | None = None) -> logging.Handler:
    """Send every logger's records, py-libp2p's included, through one :func:`handler` at ``level``.

    Replaces the root logger's handlers (a second call reconfigures). Library
    loggers are reset to propagate to it: py-libp2p's import-time setup
    leaves its logger without a handler and not propagating, so Python's
    last-resort handler printed its warnings bare, in another format.
    """
    from p2pvpn import libp2p_compat

    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    out = handler(level, stream if stream is not None else sys.stderr, journal=journal)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(out)
    # The root logger passes everything to the handler, which filters by level (see Demote); the
    # loggers themselves stay cheap at info and above: debug records are not even made.
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    libp2p_compat.route_libp2p_logs()
    for name in LIBRARIES:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        # Libraries' warnings reach the handler (and its rules); their info chatter only at debug.
        lib.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    return out


def current_filters() -> dict[str, Any]:
    """Counters of the installed rules (for tests and status): demoted and rate-limited records."""
    out = {"demoted": 0, "rate_limited": 0}
    for h in logging.getLogger().handlers:
        for f in h.filters:
            if isinstance(f, Demote):
                out["demoted"] += f.demoted
            elif isinstance(f, RateLimit):
                out["rate_limited"] += f.suppressed
    return out
