"""bench/direct_send_cpu.py on a few packets: every datagram counted as sent, in both modes (loopback only)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import direct_send_cpu  # noqa: E402

from p2pvpn.dataplane import egress, offload  # noqa: E402
from p2pvpn.testing.superpackets import tcp_record  # noqa: E402


@pytest.mark.parametrize("direct", [True, False])
async def test_both_kinds_send_everything_in_both_modes(direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress, "DIRECT_SEND", egress.DIRECT_SEND)  # restored after the bench flips it
    cpu, sent = await direct_send_cpu.one("small", direct, 8, 4)
    assert sent == 8 * 8 and cpu >= 0
    segments = offload.segment(tcp_record("100.64.0.1", "100.64.0.2", bytes(64 * 1024 - 200), gso_size=1348))
    assert segments is not None
    cpu, sent = await direct_send_cpu.one("tso", direct, 4, 4)
    assert sent == 4 * len(segments)
