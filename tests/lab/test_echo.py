"""ICMP echo from Python (p2pvpn/lab/echo.py): replies matched and timed, bad input refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _echo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pvpn.lab.echo", *args], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")
def test_loopback_echoes_are_answered_and_timed() -> None:
    res = _echo("rtt", "127.0.0.1", "--count", "5", "--interval", "0.01")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["sent"] == out["received"] == 5 and out["loss_pct"] == 0.0
    assert 0 < out["min_ms"] <= out["median_ms"] <= out["max_ms"]


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")
def test_first_reports_the_time_since_a_start() -> None:
    res = _echo("first", "127.0.0.1", "--timeout", "5")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert 0 <= out["first_reply_s"] < 5 and out["sent"] >= 1


@pytest.mark.parametrize("argv", [["rtt", "8.8.8.8"], ["rtt", "1.2.3"], ["rtt", "127.0.0.1", "--count", "0"],
                                  ["ping", "2001:4860::1"], ["rtt", "::1"]])
def test_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    res = _echo(*argv)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m p2pvpn.lab.echo") and ": error: " in last, last
