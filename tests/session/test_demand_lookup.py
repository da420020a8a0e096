"""OnDemand's lookups against a fake manager on trio's virtual clock: a slow lookup is not cut at the deadline.

The manager, routes and TUN are small stand-ins (the real ones need a TUN and
libp2p hosts: tests/session/test_ondemand_inprocess.py runs those); what runs
is the real OnDemand with the real PendingLookups.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import trio

from p2pvpn.session import demand as demand_module
from p2pvpn.session.demand import LOOKUP_ATTEMPTS, OnDemand
from p2pvpn.session.ondemand import LINGERING_LOOKUPS, LOOKUP_LINGER, LOOKUP_TIMEOUT, NEGATIVE_TTL, DropKind

DST = ipaddress.IPv4Address("100.64.0.9").packed
SRC = ipaddress.IPv4Address("100.64.0.1").packed


def echo(dst: bytes = DST) -> bytes:
    """A 28-byte IPv4 ICMP echo request (checksums do not matter here)."""
    return bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]) + SRC + dst + bytes([8, 0, 0, 0, 0, 1, 0, 1])


@dataclass
class Routes:
    table: dict[bytes, str] = field(default_factory=dict)

    def in_overlay(self, destination: bytes) -> bool:
        return True

    def lookup(self, destination: bytes) -> str | None:
        return self.table.get(destination)


@dataclass
class Tun:
    offload: bool = False
    written: list[bytes] = field(default_factory=list)

    def write(self, packet: bytes) -> bool:
        self.written.append(packet)
        return True


def manager() -> SimpleNamespace:
    return SimpleNamespace(routes=Routes(), tun=Tun(), peers={}, host=SimpleNamespace(peer_id="me"))


async def test_a_lookup_slower_than_the_deadline_fails_its_packets_but_finds_the_member_later(autojump_clock: object) -> None:
    m = manager()
    calls: list[float] = []

    async def slow_walk(address: object, trace: object = None) -> object:
        calls.append(trio.current_time())
        await trio.sleep(LOOKUP_TIMEOUT + 3)  # a walk on a loaded machine
        m.routes.table[DST] = "member"  # what Discovery.lookup_address's on_record does
        return object()

    od = OnDemand(m, idle_timeout=300.0, resolve=slow_walk)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(od.run)
        start = trio.current_time()
        assert od.miss(DST, echo())
        await trio.sleep(LOOKUP_TIMEOUT + 0.5)
        assert od.drops[DropKind.UNREACHABLE] == 1 and len(m.tun.written) == 1  # failed at the deadline, answered
        assert DST not in m.routes.table and od.describe()["lookups_resolving"] == 1
        assert od.miss(DST, echo()) and od.drops[DropKind.UNREACHABLE] == 2  # the negative cache: dropped, counted
        await trio.sleep(3)
        assert m.routes.table[DST] == "member"  # the walk was not cut: the next packet has a route
        assert calls == [start] and od.lookups_late == 1 and od.describe()["lookups_resolving"] == 0
        nursery.cancel_scope.cancel()


async def test_a_new_packet_after_the_negative_cache_waits_for_the_lingering_lookup(autojump_clock: object) -> None:
    m = manager()
    calls = 0

    async def slower_walk(address: object, trace: object = None) -> object:
        nonlocal calls
        calls += 1
        await trio.sleep(LOOKUP_TIMEOUT + NEGATIVE_TTL + 2)
        m.routes.table[DST] = "member"
        return object()

    od = OnDemand(m, idle_timeout=300.0, resolve=slower_walk)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(od.run)
        od.miss(DST, echo())
        await trio.sleep(LOOKUP_TIMEOUT + NEGATIVE_TTL + 0.5)
        assert od.miss(DST, echo())  # a new lookup by the rules (§18.3) ...
        await trio.sleep(0.1)
        assert calls == 1  # ... which starts no second walk
        await trio.sleep(2)
        assert m.routes.table[DST] == "member" and calls == 1
        nursery.cancel_scope.cancel()


async def test_attempts_and_lingering_lookups_stay_bounded(autojump_clock: object) -> None:
    m = manager()
    calls: dict[bytes, int] = {}

    async def nothing(address: ipaddress.IPv4Address, trace: object = None) -> None:
        calls[address.packed] = calls.get(address.packed, 0) + 1
        await trio.sleep(1.0)
        return None

    od = OnDemand(m, idle_timeout=300.0, resolve=nothing)  # type: ignore[arg-type]
    dsts = [ipaddress.IPv4Address(f"100.64.1.{i}").packed for i in range(LINGERING_LOOKUPS + 4)]
    async with trio.open_nursery() as nursery:
        await nursery.start(od.run)
        for dst in dsts:
            od.miss(dst, echo(dst))
        await trio.sleep(LOOKUP_TIMEOUT + 0.5)
        # past the deadline only LINGERING_LOOKUPS go on; the others stopped at it
        assert od.describe()["lookups_resolving"] == LINGERING_LOOKUPS
        await trio.sleep(LOOKUP_LINGER)  # now past deadline + LOOKUP_LINGER: all have ended
        assert od.describe()["lookups_resolving"] == 0 and not od._resolving
        assert max(calls.values()) == LOOKUP_ATTEMPTS  # the lingering ones: every attempt, no more
        assert min(calls.values()) < LOOKUP_ATTEMPTS  # the others were cut at the deadline
        assert od.drops[DropKind.UNREACHABLE] == len(dsts)
        nursery.cancel_scope.cancel()


class Queue(list):  # type: ignore[type-arg]
    """A peer's packet queue, unbounded: ``put`` says it took the packet."""

    def put(self, packet: bytes) -> bool:
        self.append(packet)
        return True


@dataclass
class Member:
    """The parts of a Peer a demand dial touches; ``want`` (the manager's) brings its tunnel up at once."""

    peer_id: str = "member"
    wanted: bool = False
    tunnel: object = None
    queue: Queue = field(default_factory=Queue)
    tunnel_changed: trio.Event = field(default_factory=trio.Event)


async def test_a_found_member_is_dialed_at_once_and_its_timeline_has_every_step(autojump_clock: object) -> None:
    m = manager()
    member = Member()
    m.peers["member"] = member
    wants: list[bool] = []

    def want(peer: Member, at_once: bool = False) -> None:
        wants.append(at_once)
        peer.wanted = True
        od.dial_step(peer.peer_id, "dial_started", had_connection=False)  # what SessionManager's dial loop says
        od.dial_step(peer.peer_id, "tunnel_up", path="direct")
        peer.tunnel = object()

    async def found_on_the_second_try(address: object, trace: dict[str, object] | None = None) -> object:
        assert trace is not None
        trace.update(rpcs=8, found_by="near" if len(calls) else None)
        calls.append(trio.current_time())
        await trio.sleep(0.5)
        if len(calls) == 1:
            return None  # a miss: asked again LOOKUP_RETRY_AFTER s later
        m.routes.table[DST] = "member"
        return object()

    calls: list[float] = []
    m.want = want
    od = OnDemand(m, idle_timeout=300.0, resolve=found_on_the_second_try)  # type: ignore[arg-type]
    od.clock = trio.current_time
    async with trio.open_nursery() as nursery:
        await nursery.start(od.run)
        start = trio.current_time()
        assert od.miss(DST, echo())
        await trio.sleep(2)
        assert wants == [True] and member.queue == [echo()]  # no smaller-ID-first wait for a demand dial
        (line,) = od.describe()["timelines"]  # type: ignore[misc]
        assert line["destination"] == "100.64.0.9" and line["kind"] == "lookup" and line["first_packet"] == start
        assert [(a["end"] - a["start"], a["found_by"]) for a in line["attempts"]] == [(0.5, None), (0.5, "near")]
        assert line["lookup_done"] == line["dial_requested"] == line["dial_started"] == line["tunnel_up"] \
            == start + 0.5 + demand_module.LOOKUP_RETRY_AFTER + 0.5
        assert line["path"] == "direct" and line["had_connection"] is False
        nursery.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def _no_icmp_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """ICMP replies are rate-limited by wall time (a burst of 20); here every failure may answer."""
    monkeypatch.setattr(demand_module, "UNREACHABLE_BURST", 1000)
