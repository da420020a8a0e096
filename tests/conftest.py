"""Test policy shared by every test.

* Tests marked ``netns`` need root, /dev/net/tun and a few tools. Where they
  are missing the tests skip with the reason, except on CI (``CI`` set), where
  that is a broken machine and the tests fail instead.
* On CI nothing may skip: a run with any skipped test fails, so a green CI
  always means every test ran.
"""

from __future__ import annotations

import functools
import os

import pytest

from p2pvpn.lab.topology import require_netns

NETNS_TOOLS = ("ping", "nft", "ss", "setpriv")  # what tests/e2e uses; other tests check their own

_skipped: list[str] = []


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def netns_unusable() -> str | None:
    """Why netns tests cannot run here, or None (checked once per session)."""
    return require_netns(*NETNS_TOOLS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is None:
        return
    reason = netns_unusable()
    if reason is None:
        return
    if on_ci():
        pytest.fail(f"netns test cannot run on this CI machine: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if on_ci() and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if on_ci() and _skipped:
        terminalreporter.write_line(
            f"CI: {len(_skipped)} test(s) skipped, so this run fails: on CI every test must run "
            f"(first: {_skipped[0]})",
            red=True,
            bold=True,
        )
