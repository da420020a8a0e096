"""The WAN emulator (bench/wanem) checked against plain TCP and ICMP.

A correctness check, not a speed target: a delay must show up as RTT, loss as
TCP retransmits, reordering in the emulator's counter, and every frame it
received must be accounted for (forwarded, dropped for a named reason, or
still queued at exit). The bounds are generous, so a busy machine cannot
make them flaky. The emulator is built with ``go build`` once per session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pvpn.lab.topology import Host, LabError, Topology, list_netns, require_netns
from p2pvpn.lab.wan import Impairment, WanLink, build_wanem, find_go

IPERF_PORT = 5201

REPO = Path(__file__).resolve().parents[2]  # the checkout: an installed p2pvpn carries no bench/


@pytest.fixture(scope="session")
def wanem_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if find_go() is None:
        pytest.skip("building wanem needs Go: `go` is not on PATH and /usr/local/go/bin/go is missing")
    try:
        return build_wanem(tmp_path_factory.mktemp("wanem"), source=REPO / "bench" / "wanem")
    except LabError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def topo() -> Iterator[Topology]:
    reason = require_netns("iperf3", "ethtool", "ss")
    if reason is not None:
        pytest.skip(reason)
    with Topology() as t:
        yield t
    assert [ns for ns in list_netns() if ns.startswith(f"{t.prefix}-")] == []


def _hosts(topo: Topology) -> tuple[Host, Host]:
    return topo.add_host("a"), topo.add_host("b")


def _rtt(src: Host, dst: str, count: int = 20) -> dict[str, Any]:
    out = src.run(sys.executable, "-m", "p2pvpn.lab.echo", "rtt", dst, "--count", str(count),
                  "--interval", "0.02", timeout=30).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def _iperf3(client: Host, server: Host, addr: str, *args: str) -> dict[str, Any]:
    server.popen("iperf3", "-s", "-1", "-B", addr, "-p", str(IPERF_PORT),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server.wait_listening(IPERF_PORT)
    out = client.run("iperf3", "-c", addr, "-p", str(IPERF_PORT), "-J", *args, timeout=60).stdout
    end: dict[str, Any] = json.loads(out)["end"]
    return end


def _transfer(client: Host, server: Host, addr: str, nbytes: int) -> None:
    """A TCP transfer of ``nbytes`` that must arrive whole (same SHA-256 at both ends)."""
    recv = server.popen(sys.executable, "-m", "p2pvpn.lab.transfer", "recv", "--bind", addr,
                        "--port", str(IPERF_PORT), stdout=subprocess.PIPE, text=True)  # fmt: skip
    server.wait_listening(IPERF_PORT)
    out = client.run(sys.executable, "-m", "p2pvpn.lab.transfer", "send", "--to", addr,
                     "--port", str(IPERF_PORT), "--bytes", str(nbytes), timeout=60).stdout  # fmt: skip
    sent = json.loads(out.strip().splitlines()[-1])  # after its "connected" line
    received, _ = recv.communicate(timeout=30)
    got = json.loads(received)
    assert got["bytes"] == sent["bytes"] == nbytes and got["sha256"] == sent["sha256"], (sent, got)


def _accounted(counters: dict[str, Any]) -> None:
    """Every received frame was forwarded, dropped for a named reason, or still queued."""
    for way in ("a_to_b", "b_to_a"):
        c = counters[way]
        ended = (c["forwarded"] + c["dropped_loss"] + c["dropped_rate"] + c["dropped_queue"]
                 + c["dropped_oversize"] + c["send_errors"] + c["queued_at_exit"])  # fmt: skip
        assert ended == c["received"], (way, c)
        assert c["dropped_oversize"] == 0, f"{way}: super-frames reached the bridge (offloads on?): {c}"


@pytest.mark.netns
def test_delay_shows_as_rtt_and_clean_transfer_completes(topo: Topology, wanem_bin: Path) -> None:
    a, b = _hosts(topo)
    wan = WanLink(topo, a, b, wanem_bin, ab=Impairment(delay_ms=4), ba=Impairment())
    rtt = _rtt(a, wan.addr_b)
    assert rtt["received"] >= 18, rtt
    # 4 ms one way, nothing back: the RTT is 4 ms plus a little scheduling.
    assert 3.9 <= rtt["median_ms"] <= 8.0, rtt
    assert rtt["min_ms"] >= 3.9, rtt
    _transfer(a, b, wan.addr_b, 4 * 1024 * 1024)
    counters = wan.stop()
    _accounted(counters)
    assert counters["dropped"] == 0, counters
    assert counters["a_to_b"]["forwarded"] > 2800  # 4 MiB in 1448-byte segments and the pings


@pytest.mark.netns
def test_no_delay_adds_little(topo: Topology, wanem_bin: Path) -> None:
    a, b = _hosts(topo)
    wan = WanLink(topo, a, b, wanem_bin)
    rtt = _rtt(a, wan.addr_b)
    assert rtt["received"] >= 18 and rtt["median_ms"] < 3.0, rtt
    _accounted(wan.stop())


@pytest.mark.netns
def test_loss_shows_as_tcp_retransmits(topo: Topology, wanem_bin: Path) -> None:
    a, b = _hosts(topo)
    wan = WanLink(topo, a, b, wanem_bin, ab=Impairment(loss_pct=1), ba=Impairment(), seed=11)
    end = _iperf3(a, b, wan.addr_b, "-t", "2")
    counters = wan.stop()
    _accounted(counters)
    lost = counters["a_to_b"]["dropped_loss"]
    assert end["sum_sent"]["retransmits"] > 0, end["sum_sent"]
    assert counters["b_to_a"]["dropped_loss"] == 0
    # 1 % of what arrived, within a wide band (binomial, thousands of frames).
    assert 0.004 <= lost / counters["a_to_b"]["received"] <= 0.02, counters["a_to_b"]


@pytest.mark.netns
def test_reordering_is_counted_and_seen_by_tcp(topo: Topology, wanem_bin: Path) -> None:
    a, b = _hosts(topo)
    wan = WanLink(topo, a, b, wanem_bin, ab=Impairment(reorder_pct=1, reorder_extra_ms=1), ba=Impairment())
    _transfer(a, b, wan.addr_b, 8 * 1024 * 1024)
    counters = wan.stop()
    _accounted(counters)
    ab = counters["a_to_b"]
    assert counters["dropped"] == 0, counters
    assert ab["reordered"] > 0 and 0.003 <= ab["reordered"] / ab["received"] <= 0.03, ab


def test_bad_flags_exit_2_with_one_line(wanem_bin: Path) -> None:
    res = subprocess.run([str(wanem_bin), "-a", "x", "-b", "y", "-loss", "150"], capture_output=True,
                         text=True, timeout=10, check=False)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ['wanem: -loss "150": not a percentage within 0..100']


def test_missing_interface_is_one_line_error(wanem_bin: Path) -> None:
    res = subprocess.run([str(wanem_bin), "-a", "nope0", "-b", "nope1"], capture_output=True,
                         text=True, timeout=10, check=False)  # fmt: skip
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wanem: interface nope0"), lines
