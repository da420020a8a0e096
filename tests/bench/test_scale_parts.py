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
    result = subprocess.run([sys.executable, str(SCALE), "sim", "--sizes", "10,25", "--lookups", "5", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rep = json.loads(out.read_text())
    assert [r["nodes"] for r in rep["results"]["per-key"]] == [10, 25]
    assert rep["real"] and rep["modeled"] and "command" in rep
    assert "per-key" in result.stdout


def test_bad_arguments_are_one_line_errors() -> None:
    for argv in (["sim", "--sizes", "ten"], ["sim", "--strategies", "gossip", "--sizes", "10"],
                 ["net", "--nodes", "500"]):  # fmt: skip
        result = subprocess.run([sys.executable, str(SCALE), *argv], capture_output=True, text=True, timeout=120,
                                check=False)  # fmt: skip
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("bench/scale.py") and " error: " in last, last
