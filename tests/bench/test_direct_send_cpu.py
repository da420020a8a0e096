"""bench/direct_send_cpu.py on a few packets: every datagram counted as sent, in both modes (loopback only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from p2pvpn.dataplane import egress, offload
from p2pvpn.testing.superpackets import tcp_record

BENCH = Path(__file__).resolve().parents[2] / "bench" / "direct_send_cpu.py"


def _load_bench():  # type: ignore[no-untyped-def]
    """The bench script as a module (bench/ is not a package, and not a dependency)."""
    spec = importlib.util.spec_from_file_location("bench_direct_send_cpu", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


direct_send_cpu = _load_bench()


@pytest.mark.parametrize("direct", [True, False])
async def test_both_kinds_send_everything_in_both_modes(direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "DIRECT_SEND", egress.DIRECT_SEND)  # restored after the bench flips it
    cpu, sent = await direct_send_cpu.one("small", direct, 8, 4)
    assert sent == 8 * 8 and cpu >= 0
    segments = offload.segment(tcp_record("100.64.0.1", "100.64.0.2", bytes(64 * 1024 - 200), gso_size=1348))
    assert segments is not None
    cpu, sent = await direct_send_cpu.one("tso", direct, 4, 4)
    assert sent == 4 * len(segments)
