"""bench/latency.py without a network: the tree A/B's argument checks and the nodes' CPU reading."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "latency.py"


def _latency() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_latency", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_before_needs_ab_and_a_tree_with_a_p2pvpn_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lat = _latency()
    with pytest.raises(SystemExit) as exc:
        lat.main(["--before", str(tmp_path)])
    assert exc.value.code == 2 and "--before need --ab" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        lat.main(["--ab", "--before", str(tmp_path)])
    assert exc.value.code == 2 and "no p2pvpn package there" in capsys.readouterr().err


def test_node_cpu_counts_a_busy_child_and_skips_a_gone_one() -> None:
    lat = _latency()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # killed below
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    try:
        seconds = 0.0
        for _ in range(200):  # bounded: until the busy child has used a clock tick or two
            seconds = lat.node_cpu([busy, gone])
            if seconds > 0:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert seconds > 0
    finally:
        busy.kill()
        busy.wait(timeout=30)
