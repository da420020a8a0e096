"""bench/scale.py's pure parts, without namespaces: the profile summary, the sim command, bad arguments."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCALE = REPO / "bench" / "scale.py"


def load_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", SCALE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collapse_counts_epoll_waits_apart_and_names_the_task() -> None:
    scale = load_scale()
    entry = "<module> (/r/p2pvpn/__main__.py:3);up (/r/p2pvpn/cli.py:9);run (/s/site-packages/trio/_core/_run.py:1)"
    raw = "\n".join([
        f"{entry};EpollIOManager.get_events (/s/site-packages/trio/_core/_io_epoll.py:3) 7",
        f"{entry};_hygiene_loop (/r/p2pvpn/discovery/dht.py:140);get_peer_ids (/s/site-packages/libp2p/kad_dht/routing_table.py:3) 2",
        f"{entry};handle (/s/site-packages/libp2p/network/swarm.py:1);read (/s/site-packages/libp2p/io/trio.py:3) 3",
        f"{entry};unrolled_run (/s/site-packages/trio/_core/_run.py:5) 5",
        "not a profile line",
    ])  # fmt: skip
    out = scale.collapse(raw)
    assert out["samples"] == 10 and out["epoll_wait_samples"] == 7
    tasks = dict(out["innermost_ours_pct"])
    assert tasks == {"(trio's run loop: scheduling, timers)": 50.0, "handle (libp2p/network/swarm.py)": 30.0,
                     "_hygiene_loop (p2pvpn/discovery/dht.py)": 20.0}  # fmt: skip
    assert dict(out["self_pct"])["get_peer_ids (libp2p/kad_dht/routing_table.py)"] == 20.0


def test_sim_command_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    result = subprocess.run([sys.executable, str(SCALE), "sim", "--sizes", "10,25", "--lookups", "5", "--window", "60",
                             "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rep = json.loads(out.read_text())
    assert [r["nodes"] for r in rep["results"]["addr-key"]] == [10, 25]  # the default: the node's discovery now
    assert all(r["window"]["seconds"] == 60 and r["churn"]["sampled"] == 5 for r in rep["results"]["addr-key"])
    assert rep["real"] and rep["modeled"] and "command" in rep
    assert "addr-key" in result.stdout


def test_bad_arguments_are_one_line_errors() -> None:
    for argv in (["sim", "--sizes", "ten"], ["sim", "--strategies", "gossip", "--sizes", "10"],
                 ["net", "--nodes", "500"]):  # fmt: skip
        result = subprocess.run([sys.executable, str(SCALE), *argv], capture_output=True, text=True, timeout=120,
                                check=False)  # fmt: skip
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("bench/scale.py") and " error: " in last, last


def test_reach_staggers_destinations_written_with_an_offset(tmp_path: Path) -> None:
    """``net --stagger``: a destination ``IP+S`` gets its first echo S s after the others (loopback, raw ICMP)."""
    import os
    import time

    import pytest

    if os.geteuid() != 0:
        pytest.skip("raw ICMP sockets need root")
    out = tmp_path / "reach.json"
    start = time.monotonic() + 0.3
    done = subprocess.run([sys.executable, str(SCALE), "reach", "--out", str(out), "--start-at", repr(start),
                           "--interval", "0.1", "--timeout", "3", "127.0.0.1", "127.0.0.2+0.8"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    state = json.loads(out.read_text())
    now, later = state["127.0.0.1"], state["127.0.0.2"]
    assert now["replied"] is not None and later["replied"] is not None
    assert now["first_sent"] < start + 0.5 <= start + 0.8 <= later["first_sent"]


def test_pair_phases_line_the_probe_up_with_the_nodes_timeline() -> None:
    scale = load_scale()
    line = {"destination": "100.64.0.9", "first_packet": 100.02, "kind": "lookup", "lookup_done": 100.52,
            "dial_requested": 100.52, "dial_started": 100.53, "had_connection": True, "connected": 100.73,
            "tunnel_up": 100.83, "path": "direct",
            "attempts": [{"start": 100.02, "end": 100.5, "found_by": "near", "rpcs": 8, "failed": 0,
                          "replies": [[0.4, "v"]]}]}  # fmt: skip
    phases = scale.pair_phases(line, 100.0, 101.0)
    assert {k: phases[k] for k in scale.PHASES} == {"to_node": 0.02, "lookup": 0.5, "to_dial": 0.01, "connect": 0.2,
                                                    "hello": 0.1, "to_reply": 0.17}  # fmt: skip
    assert phases["attempts"] == [{"s": 0.48, "found_by": "near", "rpcs": 8, "failed": 0, "replies": [[0.4, "v"]]}]
    assert phases["had_connection"] is True and phases["path"] == "direct"
    # a wake-up dial (the route was known): no lookup; a set-up that never finished: its later steps are None
    wake = scale.pair_phases({"first_packet": 100.0, "kind": "wake", "dial_started": 100.1}, 100.0, None)
    assert wake["lookup"] is None and wake["to_dial"] == 0.1 and wake["connect"] is None and wake["to_reply"] is None
    summary = scale.phase_summary([{"reach_s": 1.0, "phases": phases}, {"reach_s": 3.0, "phases": wake},
                                   {"reach_s": 0.5, "phases": None}])  # fmt: skip
    assert summary["pairs_with_timeline"] == 2 and summary["slow_pairs"] == 1
    assert summary["all"]["to_dial"]["n"] == 2 and summary["slow"]["lookup"] is None
