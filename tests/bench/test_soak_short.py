"""bench/soak.py for a minute with four nodes: the report's shape, no loss outside outages, nothing left.

Counts, not timings: every echo outside an outage window must be answered
(late ones are reported, not failed: the machine is shared), every killed
node must come back, and neither a stopped node's namespace nor the
machine may keep anything named with the run's prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2pvpn.lab.topology import list_netns, require_netns

REPO = Path(__file__).resolve().parents[2]  # the checkout: an installed p2pvpn carries no bench/

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = require_netns()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    argv = [sys.executable, str(REPO / "bench" / "soak.py"), "--nodes", "4", "--duration", "60",
            "--kill-every", "20", "--spare", "1", "--warmup", "20", "--sample-every", "2", "--json", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert out.exists(), f"no report (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}"
    rep = json.loads(out.read_text())
    rep["_exit"], rep["_stdout"] = result.returncode, result.stdout
    return rep


def test_report_structure(report: dict) -> None:
    for key in ("config", "command", "prefix", "kills", "recovery_s", "traffic", "resources", "leftovers",
                "logs", "failures", "ok"):
        assert key in report, key
    assert report["config"]["nodes"] == 4
    assert set(report["resources"]["nodes"]) == {"n1", "n2", "n3", "n4"}
    for bucket in ("inside_outages", "outside_outages"):
        assert set(report["traffic"][bucket]) == {"sent", "answered", "late", "lost"}
    assert len(report["traffic"]["pairs"]) == 4 * 2  # each node echoes two ring neighbours
    assert "soak: 4 nodes" in report["_stdout"]


def test_kills_happen_and_nodes_come_back(report: dict) -> None:
    kills = [k for k in report["kills"] if k["cause"] == "kill"]
    assert 1 <= len(kills) <= 2, report["kills"]
    assert all(k["node"] != "n1" for k in kills), "n1 is spare (--spare 1)"
    assert all(k["exit_code"] == -9 for k in kills)
    assert all(k["back_after_s"] is not None for k in report["kills"]), report["kills"]
    assert not [k for k in report["kills"] if k["cause"] == "exited"], "a node exited without being killed"


def test_no_loss_outside_outages(report: dict) -> None:
    outside = report["traffic"]["outside_outages"]
    assert outside["sent"] > 0
    assert outside["lost"] == 0, report["traffic"]["lost_outside_examples"]
    assert outside["answered"] + outside["late"] == outside["sent"]


def test_resources_sampled(report: dict) -> None:
    spare = report["resources"]["nodes"]["n1"]
    assert len(spare["processes"]) == 1  # never killed: one process all along
    assert spare["measured_processes"] == 1
    assert {"rss_growth_kib", "fd_growth", "measured_s"} <= set(spare["processes"][0])
    killed = {k["node"] for k in report["kills"]}
    for name in killed:
        assert len(report["resources"]["nodes"][name]["processes"]) >= 2  # a restart is a new process


def test_nothing_left_behind(report: dict) -> None:
    left = report["leftovers"]
    assert left["after_node_stop"] == {}, left["node_stop"]
    assert left["stale_after_restart"] == 0
    assert left["after_teardown"] == []
    assert not [ns for ns in list_netns() if ns.startswith(report["prefix"])]
    assert report["failures"] == []
    assert report["ok"] and report["_exit"] == 0


def test_every_node_log_line_has_the_one_format(report: dict) -> None:
    logs = report["logs"]
    assert logs["lines"] > 0
    assert logs["other_format"] == 0, logs["other_format_examples"]  # py-libp2p's lines included (p2pvpn.logs)
    assert sum(logs["by_level"].values()) == logs["lines"]
