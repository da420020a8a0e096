"""p2pvpn.logs: one line per record, one format for us and py-libp2p, routine library noise demoted or limited."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from p2pvpn import logs
from p2pvpn.libp2p_compat import ROUTINE_LIBP2P_LOGS

LINE_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .+$")


def record(name: str, level: int, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


@pytest.fixture
def installed() -> Iterator[tuple[io.StringIO, str]]:
    """``logs.install`` on a buffer; the root logger and library loggers are restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    libs = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
            for n in logs.LIBRARIES}
    buf = io.StringIO()
    yield buf, "info"
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (level, propagate, handlers) in libs.items():
        lib = logging.getLogger(name)
        lib.setLevel(level)
        lib.propagate = propagate
        lib.handlers[:] = handlers


def test_format_is_timestamp_level_logger_message_on_one_line() -> None:
    fmt = logs.OneLineFormatter()
    line = fmt.format(record("p2pvpn.node", logging.WARNING, "tunnel %s:\n  lost\n\n  twice", "a"))
    assert LINE_RE.match(line), line
    assert line.endswith(" WARNING p2pvpn.node: tunnel a: | lost | twice")


def test_an_exception_stays_on_the_line_and_the_traceback_only_when_asked() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError as exc:
        rec = record("p2pvpn.x", logging.ERROR, "failed", exc=exc)
    short = logs.OneLineFormatter().format(rec)
    assert "\n" not in short and short.endswith("failed | ValueError: bad | value")
    long = logs.OneLineFormatter(tracebacks=True).format(rec)
    assert "\n" not in long and "Traceback (most recent call last):" in long and "ValueError: bad" in long
    assert rec.exc_info is not None  # the record itself is untouched for other handlers


def test_journal_lines_carry_the_syslog_priority_and_no_timestamp() -> None:
    fmt = logs.JournalFormatter()
    assert fmt.format(record("p2pvpn.node", logging.WARNING, "a\nb")) == "<4>p2pvpn.node: a | b"
    assert fmt.format(record("libp2p.swarm", logging.ERROR, "x")) == "<3>libp2p.swarm: x"
    assert fmt.format(record("p2pvpn", logging.DEBUG, "x")).startswith("<7>")


def test_routine_libp2p_records_are_demoted_to_debug() -> None:
    demote = logs.Demote(logging.INFO, ROUTINE_LIBP2P_LOGS)
    noisy = record("libp2p.host.basic_host", logging.ERROR, "Failed to open stream to peer %s:\n  Error: x", "Qm")
    assert demote.filter(noisy) is False and noisy.levelname == "DEBUG"
    proto = record("libp2p.kad_dht.kad_dht", logging.WARNING, "protocols not supported: tried ['/p2pvpn/kad/1.0.0']")
    assert demote.filter(proto) is False
    assert demote.demoted == 2
    # The same text from our own logger, or another library record, is left alone.
    assert demote.filter(record("p2pvpn.node", logging.WARNING, "Failed to open stream to peer x")) is True
    assert demote.filter(record("libp2p.network.swarm", logging.ERROR, "listener died")) is True
    # At debug the threshold lets the demoted records through.
    assert logs.Demote(logging.DEBUG, ROUTINE_LIBP2P_LOGS).filter(
        record("libp2p.host.basic_host", logging.ERROR, "Failed to open stream to peer x")) is True


def test_library_info_stays_out_even_where_a_library_sets_its_own_logger_to_info(
    installed: tuple[io.StringIO, str],
) -> None:
    buf, _ = installed
    chatty = logging.getLogger("libp2p.network.auto_connector")
    saved = chatty.level
    chatty.setLevel(logging.INFO)  # as py-libp2p's auto_connector module does at import
    try:
        logs.install("info", buf, journal=False)
        chatty.info("AUTO_CONNECTOR_STATE: num_connections=13")
        logging.getLogger("p2pvpn.node").info("ours")
    finally:
        chatty.setLevel(saved)
    assert [line.rsplit(": ", 1)[1] for line in buf.getvalue().splitlines()] == ["ours"]


def test_the_threshold_filters_every_logger() -> None:
    demote = logs.Demote(logging.WARNING, ())
    assert demote.filter(record("p2pvpn.node", logging.INFO, "x")) is False
    assert demote.filter(record("p2pvpn.node", logging.WARNING, "x")) is True
    assert demote.filter(record("libp2p.x", logging.INFO, "x")) is False


def test_library_warnings_are_rate_limited_per_template_and_the_next_one_counts_the_rest() -> None:
    now = [0.0]
    limit = logs.RateLimit(burst=2, window=60, clock=lambda: now[0])
    shown = [limit.filter(record("libp2p.relay", logging.WARNING, "no reservation for %s", f"peer{i}"))
             for i in range(5)]
    assert shown == [True, True, False, False, False] and limit.suppressed == 3
    assert limit.filter(record("libp2p.relay", logging.WARNING, "another template")) is True
    assert all(limit.filter(record("p2pvpn.relay", logging.WARNING, "ours")) for _ in range(10))  # never ours
    assert all(limit.filter(record("libp2p.relay", logging.INFO, "no reservation for %s", "x")) for _ in range(5))
    now[0] = 61.0
    nxt = record("libp2p.relay", logging.WARNING, "no reservation for %s", "peer9")
    assert limit.filter(nxt) is True
    assert nxt.getMessage() == "no reservation for peer9 (and 3 similar in the last 60 s, not shown)"


def test_install_puts_libp2p_records_in_our_format(installed: tuple[io.StringIO, str]) -> None:
    buf, _ = installed
    import libp2p.utils.logging as upstream

    upstream.setup_logging()  # what `import libp2p` did: a logger that does not propagate, no handler
    assert logging.getLogger("libp2p").propagate is False
    logs.install("info", buf, journal=False)
    logging.getLogger("p2pvpn.node").info("node up")
    logging.getLogger("libp2p.network.swarm").warning("swarm says\nsomething")
    logging.getLogger("libp2p.network.swarm").info("swarm chatter")  # library info: debug only
    logging.getLogger("p2pvpn.node").debug("not at info")
    logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer X:\n  Error: y")
    lines = buf.getvalue().splitlines()
    assert [LINE_RE.match(line) is not None for line in lines] == [True, True], lines
    assert lines[0].endswith("INFO p2pvpn.node: node up")
    assert lines[1].endswith("WARNING libp2p.network.swarm: swarm says | something")
    assert logs.current_filters()["demoted"] == 1


def test_install_at_debug_shows_everything_and_at_error_only_errors(installed: tuple[io.StringIO, str]) -> None:
    buf, _ = installed
    logs.install("debug", buf, journal=False)
    logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer X")
    logging.getLogger("libp2p.network.swarm").debug("dial detail")
    assert len(buf.getvalue().splitlines()) == 2
    assert "ERROR libp2p.host.basic_host: Failed to open stream to peer X" in buf.getvalue()
    buf.truncate(0)
    buf.seek(0)
    logs.install("error", buf, journal=False)
    logging.getLogger("p2pvpn.node").warning("w")
    logging.getLogger("p2pvpn.node").error("e")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" ERROR p2pvpn.node: e")


def test_a_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of debug, info, warning, error"):
        logs.install("loud", io.StringIO())
