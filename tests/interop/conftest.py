"""Interop fixtures: the go-libp2p peer of interop/go-peer, built once per session.

The build uses the committed go.mod/go.sum (``-mod=readonly``: a go.sum that
is not commit-ready fails here, not later) and is bounded in time. Without a
Go toolchain these tests skip with the reason; on CI (``CI=true``) the
repository's tests/conftest.py turns that skip into a failure, because CI has
Go and must run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gopeer import LOOPBACK_LISTEN, GoPeer

GO_PEER_DIR = Path(__file__).resolve().parents[2] / "interop" / "go-peer"
BUILD_TIMEOUT = 900.0  # a cold module cache downloads go-libp2p first
_build: dict[str, float] = {}


def find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")  # where the Go tarball installs; often not on PATH
    return str(fallback) if fallback.exists() else None


@pytest.fixture(scope="session")
def go_peer_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = find_go()
    if go is None:
        pytest.skip("interop tests need a Go toolchain: `go` is not on PATH and /usr/local/go/bin/go is missing")
    out = tmp_path_factory.mktemp("go-peer") / "go-peer"
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    start = time.monotonic()
    try:
        result = subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=GO_PEER_DIR, env=env,
                                capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`go build` of {GO_PEER_DIR} took over {BUILD_TIMEOUT:g} s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"`go build` of {GO_PEER_DIR} failed:\n{result.stderr[-4000:]}", pytrace=False)
    _build["seconds"] = time.monotonic() - start
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "seconds" in _build:
        terminalreporter.write_line(f"interop: go-peer built in {_build['seconds']:.1f} s")


@pytest.fixture
def go_dht(go_peer_bin: Path) -> Iterator[GoPeer]:
    """A Go DHT server on loopback (network ``default``), ready."""
    with GoPeer(go_peer_bin, "dht", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as peer:
        peer.ready()
        yield peer
