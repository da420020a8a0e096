"""Discovery end to end: real ``p2pvpn up`` processes that know only one bootstrap address.

Topology (tests/e2e/conftest.py, p2pvpn.lab.demo.Lab)::

                          switch lan: br0, 198.18.1.0/24
        ┌──────────┬──────────┬─────── ... ───────┬──────────┐
       n1         n2         n3                  n12        n13
    bootstrap  --bootstrap n1 (every one of n2..n12)    joins late, --bootstrap n4

Each node runs ``p2pvpn up`` with a real TUN and no ``--peer`` at all: n1
has no bootstrap, n2..n12 have only n1's address. n1 owns the network and
every other node holds a certificate from it (given offline before the
start, p2pvpn.testing.owned): without an owner, records admit nobody. They must find each other
through the private DHT and keep a tunnel to every member. The story, in one
test because building twelve nodes is the expensive part:

1. within MESH_WITHIN s every node reports every other node "up";
2. every node pings every other node's overlay IPv4 through its TUN;
3. a node stopped with SIGTERM vanishes from the others' peer lists
   within its record TTL plus a margin;
4. a node started later, bootstrapping from a node that is not n1, is
   pinged by every node within JOIN_WITHIN s.

Timers: records live TTL s and are republished every TTL/2 s; members are
looked up every INTERVAL s. Each lookup round costs every node a few dozen
DHT RPCs (find the "members" providers, fetch their records), and one RPC
costs py-libp2p a few milliseconds of CPU (a new yamux stream, multistream
negotiation, noise frames), so twelve processes on a 2-core CI machine
saturate the CPU at a 1 s interval and every query times out. 5 s / 20 s is
twice as fast as the defaults (10 s / 300 s) and leaves CPU to spare;
docs/performance.md ("Discovery") has the numbers.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import Lab, LabNode
from p2pvpn.testing.owned import make_owned_network

pytestmark = pytest.mark.netns

NODES = 12               # started together; one more joins later
TTL = 20                 # --record-ttl: records republished every 10 s
INTERVAL = 5             # --discovery-interval (why not 1 s: see the module doc)
DISCOVERY = ("--record-ttl", str(TTL), "--discovery-interval", str(INTERVAL))
MESH_WITHIN = 60.0       # seconds from the first start to every pair "up"
MEMBERS_WITHIN = 30.0    # seconds after the mesh until every node has every member's record from the DHT
GONE_WITHIN = TTL + 10.0  # seconds from SIGTERM to the node missing from every peer list
JOIN_WITHIN = 30.0       # seconds from the late node's start to pings both ways
PING_SOURCES = 4         # source namespaces pinging at once (each pings all its targets in parallel)
POLL = 0.25


def test_nodes_given_one_bootstrap_address_mesh_ping_forget_and_admit(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(NODES + 1, start=False)
    first, late = lab.nodes[:NODES], lab.nodes[NODES]
    boot = first[0]
    _, certificates = make_owned_network(boot.directory, {n.name: n.directory for n in lab.nodes[1:]})
    for node in lab.nodes:  # the certificate decides the overlay addresses now
        c = certificates[node.name if node is not boot else ""]
        node.ipv4, node.ipv6 = str(c.ipv4), str(c.ipv6)

    # 1. Start: n1 with no bootstrap, everyone else with n1's address only.
    started = time.monotonic()
    boot.start((), *DISCOVERY)
    for node in first[1:]:
        node.start((), "--bootstrap", boot.dial_addr, *DISCOVERY)
    missing = _wait_for(lambda: _not_up(first), MESH_WITHIN, first)
    mesh_took = time.monotonic() - started
    assert not missing, (
        f"no full mesh {MESH_WITHIN:g} s after start; {len(missing)} directed pairs missing, e.g. {missing[:6]}\n"
        + _summary(first)
    )
    print(f"time to mesh: {NODES} nodes, {NODES * (NODES - 1)} directed tunnels up {mesh_took:.1f} s after the first start")
    # A tunnel may come up inbound before this node's own discovery round has fetched that member's record:
    # every node knows every member's record within a few rounds (DISCOVERY's interval).
    def short_of_members() -> list[str]:
        return [n.name for n in first if ((n.status()["discovery"] or {}).get("members") or 0) < NODES - 1]

    short = _wait_for(short_of_members, MEMBERS_WITHIN, first)
    assert not short, f"{short} do not know {NODES - 1} members {MEMBERS_WITHIN:g} s after the mesh\n" + _summary(first)
    for node in first:
        status = node.status()
        discovery = status["discovery"]
        assert discovery is not None and discovery["routing_table"] >= 1, (node.name, discovery)
        assert discovery["members"] >= NODES - 1, (node.name, discovery)
        for peer in status["peers"]:
            assert peer["learned_from"] in ("dht", "inbound"), (node.name, peer)
            assert peer["record_seq"] is not None, (node.name, peer)

    # 2. Every node pings every other node's overlay IPv4.
    ping_started = time.monotonic()
    failed = _ping_mesh(first, first)
    print(f"ping mesh: {NODES * (NODES - 1)} pings in {time.monotonic() - ping_started:.1f} s")
    assert not failed, f"pings without reply (from, to): {failed}\n" + _summary(first)

    # 3. A member leaves: the others forget it once its record expires.
    gone, stay = first[-1], first[:-1]
    stopped = time.monotonic()
    assert gone.stop(signal.SIGTERM, timeout=15) == 0, gone.log_tail()
    still = _wait_for(lambda: [n.name for n in stay if _lists(n, gone)], GONE_WITHIN, stay)
    gone_took = time.monotonic() - stopped
    assert not still, f"{gone.name} still listed {GONE_WITHIN:g} s after SIGTERM by {still}"
    print(f"stopped node forgotten by all {len(stay)} others {gone_took:.1f} s after SIGTERM (TTL {TTL} s)")

    # 4. A newcomer bootstrapping from n4 (not n1) is reached by every member, and reaches them.
    joined = time.monotonic()
    late.start((), "--bootstrap", stay[3].dial_addr, *DISCOVERY)
    unreached = _wait_for(lambda: _ping_mesh(stay, [late]) + _ping_mesh([late], stay), JOIN_WITHIN, [*stay, late])
    join_took = time.monotonic() - joined
    assert not unreached, f"{late.name} not reachable {JOIN_WITHIN:g} s after its start: {unreached}\n" + _summary([*stay, late])
    print(f"late node {late.name} pinged both ways by all {len(stay)} members {join_took:.1f} s after its start")
    assert not [n.name for n in stay if _lists(n, gone)], "the stopped node came back into a peer list"


# -- helpers ------------------------------------------------------------------


def _peers(node: LabNode) -> dict[str, dict[str, object]]:
    """``peer_id -> peer`` as ``node`` reports it ({} when it does not answer)."""
    try:
        return {p["peer_id"]: p for p in node.status(timeout=2)["peers"]}
    except ControlError:
        return {}


def _not_up(nodes: Sequence[LabNode]) -> list[tuple[str, str]]:
    """Pairs (a, b) where ``a`` does not report ``b`` "up"."""
    missing = []
    for a in nodes:
        peers = _peers(a)
        missing += [(a.name, b.name) for b in nodes if b is not a and peers.get(b.peer_id, {}).get("state") != "up"]
    return missing


def _summary(nodes: Sequence[LabNode]) -> str:
    """One line per node: tunnels up, members known, rejected records, routing table (for failure messages)."""
    lines = []
    for node in nodes:
        try:
            status = node.status(timeout=2)
        except ControlError as exc:
            lines.append(f"  {node.name}: {exc}")
            continue
        up = sum(1 for p in status["peers"] if p["state"] == "up")
        d = status.get("discovery") or {}
        lines.append(
            f"  {node.name}: {up}/{len(status['peers'])} peers up, {d.get('members')} members, "
            f"{d.get('rejected_records')} rejected records, routing table {d.get('routing_table')}, {d.get('rounds')} rounds"
        )
    return "\n".join(lines)


def _lists(node: LabNode, other: LabNode) -> bool:
    """Whether ``node`` still has ``other`` in its peer list (True if it does not answer: not yet proven)."""
    try:
        peers = node.status(timeout=2)["peers"]
    except ControlError:
        return True
    return any(p["peer_id"] == other.peer_id for p in peers)


def _ping_mesh(sources: Sequence[LabNode], targets: Sequence[LabNode]) -> list[tuple[str, str]]:
    """Ping each target's overlay IPv4 from each source; the (source, target) pairs without reply.

    One shell per source namespace runs all its pings in parallel, each
    ``ping -c 1 -w 3 -i 0.2``: up to 15 echo requests in 3 s, done at the
    first reply. At most PING_SOURCES shells run at once.
    """

    def from_source(src: LabNode) -> list[tuple[str, str]]:
        dests = {b.ipv4: b.name for b in targets if b is not src}
        if not dests:
            return []
        script = " ".join(
            f"(ping -n -q -c 1 -w 3 -i 0.2 {ip} >/dev/null 2>&1 && echo ok {ip}) &" for ip in dests
        ) + " wait"
        try:
            result = src.host.run("sh", "-c", script, check=False, timeout=20)
        except Exception:  # the lab's LabError on timeout: count every ping of this source as failed
            return [(src.name, name) for name in dests.values()]
        answered = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok ")}
        return [(src.name, name) for ip, name in dests.items() if ip not in answered]

    with ThreadPoolExecutor(max_workers=PING_SOURCES) as pool:
        return [pair for pairs in pool.map(from_source, sources) for pair in pairs]


def _wait_for(check: Callable[[], list], timeout: float, nodes: Sequence[LabNode]) -> list:  # type: ignore[type-arg]
    """Poll ``check`` until it returns an empty list or ``timeout`` passes; its last answer.

    Fails at once, with the log, if a node process died.
    """
    deadline = time.monotonic() + timeout
    result: list = []  # type: ignore[type-arg]
    for _ in range(int(timeout / POLL) + 1):  # bounded in count and time
        dead = [n for n in nodes if not n.running()]
        assert not dead, f"node {dead[0].name} exited ({dead[0].proc.returncode if dead[0].proc else None}):\n{dead[0].log_tail()}"
        result = check()
        if not result or time.monotonic() >= deadline:
            return result
        time.sleep(POLL)
    return result
