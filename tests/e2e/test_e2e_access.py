"""Who gets a tunnel in a network without owner: only listed peers (--peer, --allow-peer).

A node that lists nobody refuses every caller; ``--allow-peer`` admits one
peer by ID without dialing it. (Members of a network with an owner are
tests/membership; ``trust_members`` and ``allow_any_peer`` are gone.)
"""

from __future__ import annotations

import signal
import time

import pytest

from p2pvpn.lab.demo import Lab, LabNode

pytestmark = pytest.mark.netns


def test_an_unlisted_peer_is_refused_and_allow_peer_admits_it(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(2, start=False)
    a, b = lab.nodes
    a.start([b])  # A wants B...
    b.start([])  # ...but B lists nobody
    assert _wait(lambda: _failures(b).get("not_authorized", 0) > 0, 20), b.log_tail()
    assert (a.peer_status(b) or {}).get("state") != "up"
    assert b.peer_status(a) is None
    assert a.ping(b.ipv4, count=2).returncode != 0

    assert b.stop(signal.SIGTERM) == 0
    b.start([], "--allow-peer", a.peer_id)  # B still dials nobody: A's tunnel is let in by ID
    lab.wait_up()
    assert a.ping(b.ipv4).returncode == 0
    assert b.ping(a.ipv6).returncode == 0


def _failures(node: LabNode) -> dict[str, int]:
    try:
        return node.status().get("handshake_failures", {})  # type: ignore[no-any-return]
    except Exception:  # not answering yet
        return {}


def _wait(condition, timeout: float, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 1):  # bounded in count and time
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return False
