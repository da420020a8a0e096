"""Who gets a tunnel: a peer the listener does not list is refused, unless it allows any peer."""

from __future__ import annotations

import signal
import time

import pytest

from p2pvpn.lab.demo import Lab, LabNode

pytestmark = pytest.mark.netns

# trust_members=yes would also accept any node that published a record in the
# network's DHT; these tests are about the lists. (The default, auto, trusts
# members only once the node joins a network with bootstrap/mdns.)
LISTS_ONLY = "--trust-members=no"


def test_an_unlisted_peer_is_refused_and_allow_any_peer_admits_it(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(2, start=False)
    a, b = lab.nodes
    a.start([b], LISTS_ONLY)  # A wants B...
    b.start([])  # ...but B lists nobody, and with no bootstrap it trusts no members by default
    assert _wait(lambda: _failures(b).get("not_authorized", 0) > 0, 20), b.log_tail()
    assert (a.peer_status(b) or {}).get("state") != "up"
    assert b.peer_status(a) is None
    assert a.ping(b.ipv4, count=2).returncode != 0

    assert b.stop(signal.SIGTERM) == 0
    b.start([], LISTS_ONLY, "--allow-any-peer")
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
