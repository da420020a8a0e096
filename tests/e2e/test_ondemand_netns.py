"""On-demand tunnels end to end: real ``p2pvpn up`` processes, real TUNs, ``ping`` (docs/protocol.md §18).

Topology (p2pvpn.lab.demo.Lab)::

            switch lan: br0, 198.18.1.0/24
        ┌──────────┬──────────┬──────────┐
       n1         n2         n3         n4
    bootstrap   --peer n3  (member)   (member)
                (static)

An owned network; every node runs with ``on_demand = true`` and a short
``idle_timeout``; n2 lists n3 as a static peer. The story:

1. after the start, n2 has a tunnel to its static peer n3 only;
2. n2's first ping to n4 (never contacted) is answered: the lookup of n4's
   address record, the dial and the handshake happen while it waits;
3. the n2-n4 tunnel closes on both sides after the idle timeout; the
   static tunnel n2-n3 stays;
4. a ping from n4 to n2 reopens it (the side that sees traffic reopens).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.testing.owned import make_owned_network

pytestmark = pytest.mark.netns

IDLE = 4.0
SETTINGS = f"\non_demand = true\nidle_timeout = {IDLE}\n"
DISCOVERY = ("--record-ttl", "60", "--discovery-interval", "5")
PUBLISHED_WITHIN = 60.0
POLL = 0.25


def _state(node: LabNode, other: LabNode) -> str | None:
    try:
        peers = node.status(timeout=10)["peers"]
    except ControlError:
        return None
    return next((str(p["state"]) for p in peers if p["peer_id"] == other.peer_id), None)


def _wait(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # bounded in time
        if condition():
            return True
        time.sleep(POLL)
    return condition()


def _published(node: LabNode) -> bool:
    try:
        discovery = node.status(timeout=10)["discovery"]
    except ControlError:
        return False
    return bool(discovery and discovery["last_published"])


def test_first_ping_opens_a_tunnel_idle_closes_it_static_stays(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(4, start=False)
    boot, n2, n3, n4 = lab.nodes
    _, certificates = make_owned_network(boot.directory, {n.name: n.directory for n in lab.nodes[1:]})
    for node in lab.nodes:
        c = certificates[node.name if node is not boot else ""]
        node.ipv4, node.ipv6 = str(c.ipv4), str(c.ipv6)
        with open(node.directory / "config.toml", "a") as f:
            f.write(SETTINGS)
    boot.start((), *DISCOVERY)
    n3.start((), "--bootstrap", boot.dial_addr, *DISCOVERY)
    n4.start((), "--bootstrap", boot.dial_addr, *DISCOVERY)
    n2.start([n3], "--bootstrap", boot.dial_addr, *DISCOVERY)
    assert _wait(lambda: all(_published(n) for n in lab.nodes), PUBLISHED_WITHIN), "records not published"
    assert _wait(lambda: _state(n2, n3) == "up", 30), "the static peer is not up"

    # 1. Nothing but the static tunnel.
    assert _state(n2, n4) != "up" and _state(n4, n2) != "up"

    # 2. The first packet to a member never contacted is answered.
    started = time.monotonic()
    result = n2.ping(n4.ipv4, "-W", "8", count=1, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + n2.log_tail()
    print(f"first ping n2 -> n4 answered in {time.monotonic() - started:.2f} s: {result.stdout.splitlines()[1:2]}")
    assert _state(n2, n4) == "up"
    on_demand = n2.status()["on_demand"]
    assert on_demand["lookups"] >= 1 and on_demand["demand_dials"] >= 1, on_demand

    # 3. Idle: both sides close; the static tunnel stays.
    assert _wait(lambda: _state(n2, n4) != "up" and _state(n4, n2) != "up", 4 * IDLE + 10), "idle tunnel stayed up"
    assert n2.status()["on_demand"]["idle_closed"] + n4.status()["on_demand"]["idle_closed"] >= 1
    time.sleep(IDLE * 1.5)
    assert _state(n2, n3) == "up", "the static tunnel was closed"
    assert n3.status()["on_demand"]["idle_closed"] == 0, "the static peer's other side closed it (only openers idle)"
    assert _state(n2, n4) != "up", "the idle tunnel came back without traffic"

    # 4. Traffic from the other side reopens it.
    result = n4.ping(n2.ipv4, "-W", "8", count=1, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + n4.log_tail()
