"""NAT traversal end to end: two nodes behind real NAT routers, relays on a "public" network.

Topology (p2pvpn.lab.natlab)::

      relay r1 198.18.0.10   relay r2 198.18.0.11      (``p2pvpn relay``, as nobody, no TUN)
                 └────── switch wan 198.18.0.0/24 ──────┐
        nat1 198.18.0.1 (masquerade)          nat2 198.18.0.2 (masquerade, eim | random)
        └─ a 198.18.10.2 (p2pvpn up)           └─ b 198.18.20.2 (p2pvpn up)

a and b know only the relays' addresses. Each finds out it is unreachable
(AutoNAT), reserves slots on both relays (found in the DHT), publishes its
``/p2p-circuit`` addresses, finds the other's record and connects through a
relay; then the side that accepted the relayed connection tries DCUtR.

* Case A, both NATs endpoint-independent: relayed first, then direct; a TCP
  transfer started over the relay finishes over the direct connection with
  matching SHA-256 (the tunnel moved under it).
* Case B, nat2 maps each connection to a random port: hole punching fails,
  the tunnel stays relayed and carries a TCP transfer; a pattern sent inside
  the tunnel never appears in the bytes captured on the relays.
* Case C (same lab as B): the relay carrying the tunnel is killed; the tunnel
  recovers through the other relay within 30 s, and the killed relay, once
  restarted, gets its slots back.

The numbers printed here (``-s``) are the ones in docs/performance.md.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pvpn.lab.demo import LabNode, wait_for
from p2pvpn.lab.natlab import NatLab, RelayProc

pytestmark = pytest.mark.netns

FAST = ("--discovery-interval", "1", "--record-ttl", "30")
UP_WITHIN = 45.0          # seconds from start to the first packet through a relay
DIRECT_WITHIN = 30.0      # seconds from the first packet to the tunnel being direct (Case A)
RECOVER_WITHIN = 30.0     # seconds from killing the relay to pings working again (Case C)
MARKER = "P2PVPN-PLAINTEXT-MARKER-7f3a9c"
PORT = 5201

MakeNatLab = Callable[..., NatLab]


@pytest.fixture
def make_nat_lab(lab_prefix: Callable[[], str]) -> Iterator[MakeNatLab]:
    if shutil.which("tcpdump") is None:
        pytest.skip("`tcpdump` is not installed")  # on CI, tests/conftest.py turns this into a failure
    labs: list[NatLab] = []

    def make(mapping_b: str) -> NatLab:
        lab = NatLab(prefix=lab_prefix(), mapping_b=mapping_b)
        labs.append(lab)
        lab.__enter__()
        return lab

    yield make
    for lab in labs:
        for proc in [*lab.nodes, *lab.relays]:  # shown by pytest only when the test fails
            print(f"--- log of {proc.name} ({lab.prefix}) ---\n{proc.log_tail(40)}")
        lab.close()


def test_case_a_both_nats_eim_relayed_first_then_direct_and_tcp_survives_the_move(make_nat_lab: MakeNatLab) -> None:
    lab = make_nat_lab("eim")
    a, b = lab.nodes
    lab.start_relays(*FAST)
    started = time.monotonic()
    lab.start_nodes(*FAST)
    _wait_running(b)

    # A 12 MiB transfer at 2 MiB/s, started before any tunnel exists: it connects over
    # the first tunnel (the relay) and must finish, intact, over the direct one.
    receiver = _recv(b)
    sender = _send(a, b, 12 << 20, rate=2 << 20)
    assert _read_line(sender, UP_WITHIN) == "connected", a.log_tail()
    first_packet = time.monotonic() - started
    at_connect = lab.peer_view(a, b) or {}
    print(f"case A: first packet (TCP handshake through the tunnel) {first_packet:.1f} s after start, "
          f"path {at_connect.get('path')}")

    direct = wait_for(lambda: (lab.peer_view(a, b) or {}).get("path") == "direct", DIRECT_WITHIN)
    until_direct = time.monotonic() - started
    assert direct, f"tunnel not direct {DIRECT_WITHIN:g} s after the first packet: {lab.peer_view(a, b)}"
    print(f"case A: direct {until_direct:.1f} s after start ({until_direct - first_packet:.1f} s after the first packet)")

    sent, got = _results(sender, receiver, context=lambda: [lab.peer_view(a, b), lab.peer_view(b, a)])
    assert got["bytes"] == sent["bytes"] == 12 << 20 and got["sha256"] == sent["sha256"], (sent, got)
    view = lab.peer_view(a, b) or {}
    assert view["path"] == "direct" and view["path_changes"] >= 1, view  # it was relayed before
    assert at_connect.get("path") == "relayed", f"the transfer did not start over the relay: {at_connect}"
    assert a.ping(b.ipv4, count=3).returncode == 0
    assert sum(relay.status()["relay"]["circuits_total"] for relay in lab.relays) >= 1
    punched = [n.status()["nat"]["hole_punching"] for n in lab.nodes]
    assert sum(p["succeeded"] for p in punched) >= 1, punched
    print(f"case A: hole punch {sum(p['succeeded'] for p in punched)} of {sum(p['attempts'] for p in punched)} "
          f"sessions succeeded; TCP transfer relayed->direct intact (sha256 {got['sha256'][:16]}…)")

    mbit = _throughput(a, b, 48 << 20)
    print(f"case A: direct throughput {mbit:.0f} Mbit/s (48 MiB through the tunnel)")


def test_case_b_random_nat_stays_relayed_relay_sees_only_ciphertext_and_case_c_recovery(
    make_nat_lab: MakeNatLab,
) -> None:
    lab = make_nat_lab("random")
    a, b = lab.nodes
    lab.start_relays(*FAST)
    started = time.monotonic()
    lab.start_nodes(*FAST)
    up = wait_for(lambda: a.ping(b.ipv4, count=1, timeout=5).returncode == 0, UP_WITHIN)
    assert up, f"no ping through a relay {UP_WITHIN:g} s after start: {lab.peer_view(a, b)}"
    print(f"case B: first ping answered {time.monotonic() - started:.1f} s after start")

    # Let two hole punch sessions play out (a failing one takes up to ~20 s): the tunnel stays relayed.
    punched = wait_for(lambda: _punch_sessions(lab) >= 2, 60)
    view = lab.peer_view(a, b) or {}
    assert view.get("path") == "relayed" and view.get("relay"), view
    stats = [n.status()["nat"]["hole_punching"] for n in lab.nodes]
    assert punched and sum(s["succeeded"] for s in stats) == 0, stats
    print(f"case B: hole punch 0 of {sum(s['attempts'] for s in stats)} sessions succeeded; path stays relayed")

    # Confidentiality: capture everything on both relays while a marked transfer crosses one.
    captures = [_capture(relay, lab.workdir) for relay in lab.relays]
    mbit = _throughput(a, b, 16 << 20, marker=MARKER)
    for proc, _ in captures:
        proc.terminate()
        proc.wait(timeout=10)
    captured = [path.read_bytes() for _, path in captures]
    assert sum(len(c) for c in captured) > 16 << 20, "the captures missed the relayed transfer"
    for relay, data in zip(lab.relays, captured):
        assert MARKER.encode() not in data, f"plaintext marker seen on relay {relay.name}"
    print(f"case B: relayed throughput {mbit:.0f} Mbit/s; {sum(len(c) for c in captured) >> 20} MiB captured "
          "on the relays, marker absent")

    # Case C: kill the relay under the tunnel; the other relay takes over.
    view = lab.peer_view(a, b) or {}
    carrier = next(r for r in lab.relays if r.peer_id == view.get("relay"))
    other = next(r for r in lab.relays if r is not carrier)
    carrier.kill()
    killed = time.monotonic()
    back = wait_for(lambda: a.ping(b.ipv4, count=1, timeout=3).returncode == 0
                    and (lab.peer_view(a, b) or {}).get("relay") == other.peer_id, RECOVER_WITHIN)
    took = time.monotonic() - killed
    assert back, f"tunnel not back {RECOVER_WITHIN:g} s after killing {carrier.name}: {lab.peer_view(a, b)}"
    print(f"case C: relay {carrier.name} (under the tunnel) killed; pings through {other.name} after {took:.1f} s")

    carrier.start(*FAST)
    restarted = time.monotonic()
    slots = wait_for(lambda: all(_slots(n) == 2 for n in lab.nodes), 45)
    assert slots, [n.status()["nat"]["relay_slots"] for n in lab.nodes]
    print(f"case C: {carrier.name} restarted; both nodes hold slots on both relays again "
          f"{time.monotonic() - restarted:.1f} s later")


# -- helpers -------------------------------------------------------------------


def _wait_running(node: LabNode) -> None:
    assert wait_for(lambda: _answers(node), 30), node.log_tail()


def _answers(node: LabNode) -> bool:
    try:
        node.status(timeout=2)
    except Exception:  # ControlError until the node is up
        return False
    return True


def _transfer_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pvpn.lab.transfer", *args]


def _recv(node: LabNode) -> subprocess.Popen[str]:
    proc = node.host.popen(*_transfer_argv("recv", "--bind", "0.0.0.0", "--port", str(PORT)),
                           stdout=subprocess.PIPE, text=True)
    node.host.wait_listening(PORT)
    return proc


def _send(src: LabNode, dst: LabNode, size: int, rate: float = 0.0, marker: str = "") -> subprocess.Popen[str]:
    args = ["send", "--to", dst.ipv4, "--port", str(PORT), "--bytes", str(size), "--rate", str(rate)]
    if marker:
        args += ["--marker", marker]
    return src.host.popen(*_transfer_argv(*args), stdout=subprocess.PIPE, text=True)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _results(
    sender: subprocess.Popen[str], receiver: subprocess.Popen[str], context: Callable[[], object] = lambda: None
) -> tuple[dict[str, Any], dict[str, Any]]:
    out = []
    for name, proc in (("sender", sender), ("receiver", receiver)):
        stdout, _ = proc.communicate(timeout=120)
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert lines, f"transfer {name} printed no result: {stdout!r}; peers: {context()}"
        out.append(json.loads(lines[-1]))
    return out[0], out[1]


def _throughput(src: LabNode, dst: LabNode, size: int, marker: str = "") -> float:
    """Mbit/s of an unthrottled transfer, checked end to end by SHA-256."""
    receiver = _recv(dst)
    sender = _send(src, dst, size, marker=marker)
    sent, got = _results(sender, receiver)
    assert got["sha256"] == sent["sha256"] and got["bytes"] == size, (sent, got)
    return float(size * 8 / got["seconds"] / 1e6)


def _capture(relay: RelayProc, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    path = workdir / f"{relay.name}.pcap"
    proc = relay.host.popen("tcpdump", "-i", "eth0", "-s", "0", "-U", "-Z", "root", "-w", str(path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # tcpdump needs a moment before it captures
    return proc, path


def _punch_sessions(lab: NatLab) -> int:
    """Hole punch sessions that have finished, on both nodes."""
    total = 0
    for node in lab.nodes:
        try:
            punch = node.status(timeout=2)["nat"]["hole_punching"]
            total += punch["succeeded"] + punch["failed"]
        except Exception:  # ControlError while the node is busy: count nothing this time
            pass
    return total


def _slots(node: LabNode) -> int:
    try:
        return len(node.status(timeout=2)["nat"]["relay_slots"]["relays"])
    except Exception:  # ControlError
        return 0
