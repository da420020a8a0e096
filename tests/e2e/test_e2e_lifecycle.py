"""A node's life: clean stop on SIGTERM, kill -9 and restart, a port clash, the lab torn down on a signal (its story: tests/lab)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pvpn.lab.demo import Lab, LabNode, p2pvpn_argv, run_cli

pytestmark = pytest.mark.netns

BACK_WITHIN = 10.0  # seconds from restart to a working tunnel


def test_sigterm_stops_the_node_promptly_and_removes_its_tun(lab2: Lab) -> None:
    a, b = lab2.nodes
    start = time.monotonic()
    code = a.stop(signal.SIGTERM, timeout=15)
    took = time.monotonic() - start
    assert code == 0, a.log_tail()
    assert took < 5, f"SIGTERM took {took:.1f} s"
    assert not _has_link(a, a.tun)
    assert not a.control_path.exists()
    assert _wait(lambda: (b.peer_status(a) or {}).get("state") != "up", 10), "B still thinks A is up"


def test_a_node_killed_with_sigkill_is_back_within_10_s_of_its_restart(lab2: Lab) -> None:
    a, b = lab2.nodes
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    assert not _has_link(a, a.tun)  # the kernel removed the TUN with the process
    restarted = time.monotonic()
    a.restart()  # same directory, same port, same peers; the control socket is stale
    back = _wait(lambda: a.ping(b.ipv4, count=1).returncode == 0, BACK_WITHIN)
    took = time.monotonic() - restarted
    assert back, f"no tunnel {BACK_WITHIN:g} s after the restart:\n{a.log_tail()}"
    print(f"tunnel back {took:.1f} s after the restart")
    assert b.ping(a.ipv4).returncode == 0
    assert b.ping(a.ipv6).returncode == 0
    assert (b.peer_status(a) or {}).get("state") == "up"


def test_a_node_redials_a_peer_that_was_down_for_a_while(lab2: Lab) -> None:
    a, b = lab2.nodes
    assert b.stop(signal.SIGTERM) == 0
    assert _wait(lambda: (a.peer_status(b) or {}).get("state") != "up", 10)
    time.sleep(3)  # A's redials fail meanwhile
    restarted = time.monotonic()
    b.start([], "--allow-peer", a.peer_id)  # B dials nobody now: only A's redial can bring the tunnel back
    back = _wait(lambda: a.ping(b.ipv4, count=1).returncode == 0, BACK_WITHIN)
    assert back, f"A did not redial B within {BACK_WITHIN:g} s:\n{a.log_tail()}"
    print(f"tunnel back {time.monotonic() - restarted:.1f} s after the restart")


def test_a_second_node_on_a_used_port_fails_in_one_line_and_the_first_keeps_working(lab2: Lab) -> None:
    a, b = lab2.nodes
    second = lab2.workdir / "second"
    run_cli("init", "--dir", str(second))
    other_tun = f"{lab2.prefix}-2nd"
    argv = p2pvpn_argv("up", "--dir", str(second), "--listen", a.listen, "--tun", other_tun, "--peer", b.dial_addr)
    result = a.host.run(*argv, check=False, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    # The node may have logged its progress (e.g. the TUN it made) before it found the port taken.
    log_record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO) ")
    (line,) = [x for x in result.stderr.strip().splitlines() if not log_record.match(x)]
    assert line.startswith("p2pvpn: error:") and "in use" in line, result.stderr
    assert not _has_link(a, other_tun)
    assert a.running()
    assert a.ping(b.ipv4).returncode == 0
    assert b.ping(a.ipv4).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_lab_demo_tears_down_when_signalled(
    sig: signal.Signals, tmp_path: Path, leftovers_of: Callable[[str], list[str]]
) -> None:
    output = tmp_path / "lab.out"
    argv = p2pvpn_argv("lab", "--nodes", "3", "--keep", "120")
    with open(output, "w") as out:
        lab = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The lab runs its whole story (create, invite, join, ping, revoke) before it "stays up": minutes on a
        # loaded 2-core machine.
        assert _wait(lambda: "stays up" in output.read_text() or lab.poll() is not None, 300), output.read_text()
        assert lab.poll() is None, output.read_text()
        lab.send_signal(sig)
        assert lab.wait(timeout=30) == 128 + sig, output.read_text()
    finally:
        if lab.poll() is None:  # a failed assertion above: let the lab tear down before it is killed
            lab.terminate()
            try:
                lab.wait(timeout=60)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait(timeout=30)
    text = output.read_text()
    match = re.search(r"namespaces (p2v[0-9a-f]+)-\*", text)
    assert match, text
    assert "torn down" in text
    assert leftovers_of(match.group(1)) == []


# -- helpers ------------------------------------------------------------------


def _has_link(node: LabNode, name: str) -> bool:
    return node.host.run("ip", "link", "show", name, check=False).returncode == 0


def _wait(condition, timeout: float, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 1):  # bounded in count and time
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return False
