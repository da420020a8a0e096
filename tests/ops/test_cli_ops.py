"""The operator's commands from outside: `down`/`reload` without a node, `--metrics` mistakes, and the
peers table at 80 columns (names from certificates, no column cut mid-value)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from p2pvpn.cli_ops import peers_table

TIMEOUT = 120.0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PVPN")}
    return subprocess.run([sys.executable, "-m", "p2pvpn", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pvpn: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", ["down", "reload"])
def test_down_and_reload_without_a_node_are_one_line(tmp_path: Path, command: str) -> None:
    one_line_error(run(command, "--dir", str(tmp_path)), "no node is running")


@pytest.mark.parametrize("value,words", [("0.0.0.0:9469", ("not a loopback", "--metrics-public")),
                                         ("127.0.0.1", ("not ADDR:PORT",)),
                                         ("127.0.0.1:99999", ("1..65535",))])
def test_bad_metrics_addresses_are_one_line(tmp_path: Path, value: str, words: tuple[str, ...]) -> None:
    one_line_error(run("up", "--dir", str(tmp_path), "--metrics", value), *words)


def _peer(pid: str, name: str | None, **extra: object) -> dict[str, object]:
    now = time.time()
    return {"peer_id": pid, "name": name, "ipv4": "100.100.123.234", "ipv6": "fd5e:1234:5678:9abc:1:2:3:4",
            "state": "up", "since": now - 3 * 3600, "learned_from": "discovery", "path": "direct",
            "transport": "tcp", "remote": "198.18.101.102:4242", "relay": None, "data_path": "udp",
            "rtt_ms": 123.456, "bytes_in": 5_000_000_000, "bytes_out": 123_456_789, "packets_in": 10,
            "packets_out": 20, "drops": {"queue_full": 12345, "no_route": 3}, **extra}


PEERS = [
    _peer("12D3KooWQYhTNQdmr3dNRT8SsngxTNpYxnRrzSMr6Wd5hGyYfoi1", "laptop-of-alice"),
    _peer("12D3KooWBXbM3f3smR7QZ9XQdWz1RZyLtj3fE7AHxFvT3dLqSbzE", None, state="connecting", path=None,
          rtt_ms=None, data_path=None),
    _peer("12D3KooWHh2ZBkZz9tDo6XHSnJ6EJ6zsQmDcrTbtvW6K7yTBvUkH", "build-server",
          relay="12D3KooWRelayRelayRelayRelayRelayRelayRelayRelayZZ9", path="relayed", data_path="stream"),
]


def test_peers_fit_80_columns_with_names_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    console = Console(file=io.StringIO(), record=True)  # not a terminal: rich takes the width from COLUMNS
    assert console.width == 80
    console.print(peers_table(PEERS))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    for whole in ("laptop-of-alice", "build-server", "100.100.123.234", "direct tcp", "relay …layZZ9", "123.5ms",
                  "4.7 GiB", "117.7 MiB", "12348", "dialing", "udp", "stream"):
        assert whole in text, (whole, text)
    # A peer without a certificate shows a short ID both ends can be matched against `--json`.
    assert "12D3…LqSbzE" in text
    # Names take the first line of their row; the ID's tail is under them.
    row = next(i for i, line in enumerate(lines) if "laptop-of-alice" in line)
    assert "hGyYfoi1"[-6:] in lines[row + 1]
