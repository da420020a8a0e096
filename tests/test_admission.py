"""The connection gate's decisions with a stand-in host and connections (no network)."""

from __future__ import annotations

from typing import Any

from p2pvpn.admission import ConnectionGate
from p2pvpn.limits import Limits, ResourceManager


class StandInHost:
    def __init__(self, limits: Limits) -> None:
        self.limits = ResourceManager(limits)
        self.members: set[str] = set()
        self.protected: list[str] = []
        self.libp2p = self

    def is_member(self, peer: Any) -> bool:
        return peer in self.members

    def protect_member(self, peer: Any) -> None:
        self.protected.append(peer)

    def get_network(self) -> Any:
        return self

    def is_protected(self, peer: Any, tag: str = "") -> bool:
        return False


class Muxed:
    def __init__(self, peer: str, ip: str) -> None:
        self.peer_id = peer
        self.ip = ip

    def get_transport_addresses(self) -> list[Any]:
        return []

    def get_remote_address(self) -> tuple[str, int]:
        return (self.ip, 4242)


class Conn:
    def __init__(self, peer: str, ip: str = "198.18.0.7") -> None:
        self.muxed_conn = Muxed(peer, ip)
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_strangers_past_the_limit_are_closed_and_members_pass_protected() -> None:
    host = StandInHost(Limits(conns=2, conns_per_peer=1))
    gate = ConnectionGate(host)  # type: ignore[arg-type]
    a, b, c, twice = Conn("a"), Conn("b"), Conn("c"), Conn("a")
    for conn in (a, twice, b, c):
        await gate.connected(None, conn)
    assert not a.closed and not b.closed and c.closed and twice.closed
    assert host.limits.gauges["conns"].hits == 1 and host.limits.gauges["conns_per_peer"].hits == 1
    host.members.add("m")
    member = Conn("m")
    await gate.connected(None, member)
    assert not member.closed and host.protected == ["m"]
    await gate.disconnected(None, a)
    assert host.limits.gauges["conns"].in_use == 1


async def test_a_stranger_that_became_a_member_frees_its_stranger_slot() -> None:
    host = StandInHost(Limits(conns=1))
    gate = ConnectionGate(host)  # type: ignore[arg-type]
    early = Conn("x")
    await gate.connected(None, early)
    host.members.add("x")  # its record arrived
    late = Conn("y")
    await gate.connected(None, late)
    assert not late.closed  # x's slot came back on the next connection
    assert "x" in host.protected
    assert host.limits.gauges["conns"].in_use == 1
