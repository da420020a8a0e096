"""bench/scale.py with 20 nodes and short windows: every node up, every sampled pair reached, nothing left.

Counts, not timings (the machine is shared): the time to reach, idle CPU
and RSS are in the report, and docs/performance.md ("Scale") has the
50-node figures; here only that the run measured them for every node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2pvpn.lab.topology import list_netns, require_netns

REPO = Path(__file__).resolve().parents[2]  # the checkout: an installed p2pvpn carries no bench/
NODES = 20
PAIRS = 20

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = require_netns("nft")
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    argv = [sys.executable, str(REPO / "bench" / "scale.py"), "net", "--nodes", str(NODES), "--pairs", str(PAIRS),
            "--measure-after", "30", "--reach-timeout", "60", "--settle", "2", "--idle-window", "5",
            "--up-timeout", "180", "--json", str(out)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert out.exists(), f"no report (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}"
    rep = json.loads(out.read_text())
    rep["_exit"], rep["_stdout"] = result.returncode, result.stdout
    return rep


def test_report_structure(report: dict) -> None:
    for key in ("config", "command", "commit", "load", "phases", "start", "reach", "idle", "leftovers", "failures", "ok"):
        assert key in report, key
    assert report["config"]["nodes"] == NODES
    assert f"scale: {NODES} nodes" in report["_stdout"]


def test_every_node_came_up_and_was_measured(report: dict) -> None:
    assert report["start"]["nodes_ready"] == NODES, report["failures"]
    nodes = report["idle"]["nodes"]
    assert set(nodes) == {f"n{i}" for i in range(1, NODES + 1)}
    assert report["idle"]["nodes_up"] == NODES
    for name, node in nodes.items():
        assert node["running"], name
        assert node["memory_kib"]["VmRSS"] > 0 and "idle_cpu_pct" in node, name


def test_every_sampled_pair_was_reached(report: dict) -> None:
    reach = report["reach"]
    assert reach["sampled"] == PAIRS
    missed = [p for p in reach["pairs"] if p["reach_s"] is None]
    assert not missed, missed[:5]
    assert all(p["first_sent_s"] >= report["phases"]["measure_at_s"] - 0.5 for p in reach["pairs"])


def test_nothing_left_behind(report: dict) -> None:
    assert report["leftovers"] == {"after_node_stop": {}, "after_teardown": []}
    assert not [ns for ns in list_netns() if ns.startswith(report["prefix"])]
    assert report["failures"] == []
    assert report["ok"] and report["_exit"] == 0
