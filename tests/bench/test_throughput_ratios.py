"""bench/throughput.py's same-run ratios and table, without a network: a lab switch measures no-VPN both ways."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


def _throughput() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_lab_switch_divides_each_variant_by_its_own_no_vpn_run() -> None:
    tp = _throughput()
    run = {"veth": {"mbit_s": 800.0}, "veth_off": {"mbit_s": 400.0},
           "tunnel": {"mbit_s": 600.0}, "off": {"mbit_s": 300.0}}  # fmt: skip
    tp.add_ratios(run)
    assert run["tunnel_over_veth"] == 0.75 and run["off_over_veth"] == 0.75
    assert run["tunnel_over_off"] == 2.0 and run["veth_over_veth_off"] == 2.0


def test_a_node_switch_divides_both_variants_by_the_one_no_vpn_run() -> None:
    tp = _throughput()
    run = {"veth": {"mbit_s": 800.0}, "tunnel": {"mbit_s": 600.0}, "off": {"mbit_s": 400.0},
           "raw": {"error": "x"}}  # fmt: skip
    tp.add_ratios(run)
    assert run["tunnel_over_veth"] == 0.75 and run["off_over_veth"] == 0.5
    assert run["veth_over_veth_off"] is None and run["tunnel_over_raw"] is None


def test_the_table_shows_the_emulator_and_receive_batch_columns_and_lists_failures() -> None:
    tp = _throughput()
    runs = []
    for veth, wan, batch in ((900.0, 6.0, 40.0), (950.0, 8.0, 60.0)):
        run = {"veth": {"mbit_s": veth, "wanem_cpu_s_per_gib": wan}, "veth_off": {"error": "iperf3 failed"},
               "tunnel": {"mbit_s": 600.0, "udp_b": {"rx_per_batch": batch}}}  # fmt: skip
        tp.add_ratios(run)
        runs.append(run)
    result = {"profile": "low", "runs": runs, "summary": tp.summarize(runs)}
    assert result["summary"]["wanem_cpu_s_per_gib_veth"]["median"] == 7.0
    assert result["summary"]["udp_rx_per_batch"]["median"] == 50.0
    text = tp.table([result])
    header = text.splitlines()[0]
    assert "wanem CPU s/GiB no-VPN" in header and "b datagrams per receive batch" in header
    assert "- low run 1 veth_off: error: iperf3 failed" in text
    assert tp._failed([result])


def test_the_machine_idle_share_is_read_from_proc_stat_and_only_grows() -> None:
    tp = _throughput()
    idle0, all0 = tp.machine_idle()
    sum(range(200_000))  # some CPU time passes
    idle1, all1 = tp.machine_idle()
    assert 0 <= idle0 <= all0 and 0 <= idle1 <= all1
    assert idle1 >= idle0 and all1 >= all0


def test_the_inner_flow_columns_and_the_tree_variant_reach_the_table() -> None:
    tp = _throughput()
    run = {"veth": {"mbit_s": 900.0, "mean_rtt_ms": 8.5, "machine_idle": 0.4},
           "tunnel": {"mbit_s": 600.0, "mean_rtt_ms": 20.0, "machine_idle": 0.05}}  # fmt: skip
    tp.add_ratios(run)
    summary = tp.summarize([run])
    assert summary["inner_rtt_tunnel_ms"]["median"] == 20.0 and summary["idle_veth"]["median"] == 0.4
    text = tp.table([{"profile": "low", "runs": [run], "summary": summary}])
    assert "| 8.50 | 20.00 | - | 40% | 5% | - |" in text
