"""Dht.get_address's iterative value lookup over real py-libp2p hosts on loopback (issue 16).

Five hosts in a chain, each connected to its neighbours only, so each
routing table holds its neighbours::

    a ── b ── c ── d ── e   (e holds the address record)

a asks b (its table, its connection); b names c, c names d, d names e, e
answers: one GET_VALUE per hop, 4 in all. py-libp2p's ``get_value`` would
first walk FIND_NODE to convergence (b, c, d, e: 4 RPCs) and only then send
GET_VALUE to the peers it found (up to 4 more).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.discovery.address import keys_of
from p2pvpn.discovery.dht import Dht
from p2pvpn.discovery.record import make_record, seal
from p2pvpn.testing.dhts import dht_hosts, until

NETWORK = "walk-test"
WAIT = 20.0  # seconds for tables to fill (hygiene after HYGIENE_SETTLE s; a loaded machine is slow)
CHAIN = 5


def _address_record() -> tuple[str, bytes, bytes]:
    owner_key = Ed25519PrivateKey.new(bytes([9]) * 32)
    record = make_record(ID.from_pubkey(owner_key.get_public_key()), NETWORK, seq=1, now=time.time(),
                         addrs=("/ip4/198.18.0.9/tcp/4001",))
    sealed = seal(record, owner_key)
    bad = seal(make_record(ID.from_pubkey(owner_key.get_public_key()), "another-network", seq=2, now=time.time(),
                           addrs=("/ip4/198.18.0.9/tcp/4001",)), owner_key)
    return keys_of(NETWORK, record)[0], sealed, bad


async def test_a_record_four_hops_away_is_found_with_one_get_value_per_hop() -> None:
    key, value, bad = _address_record()
    async with AsyncExitStack() as stack:
        hosts, dhts = await dht_hosts(stack, CHAIN, NETWORK)
        for left, right in zip(hosts, hosts[1:]):
            await left.libp2p.connect(PeerInfo(right.peer_id, right.libp2p.get_addrs()))
        ends = (0, CHAIN - 1)
        assert await until(lambda: all(d.routing_table_size() >= (1 if i in ends else 2)
                                        for i, d in enumerate(dhts)), WAIT), [d.routing_table_size() for d in dhts]
        a, e = dhts[0], dhts[-1]
        assert a.kad.routing_table.get_peer_ids() == [hosts[1].peer_id]  # a knows only b
        e.kad.value_store.put(key.encode(), value)
        dhts[2].kad.value_store.put(key.encode(), bad)  # c holds an invalid copy: counted, ignored
        rejected = a.rejected
        with trio.fail_after(WAIT):
            found = await a.get_address(key)
        assert found == value
        assert a.reads["address_walk"] == 1 and a.reads["address_asked"] == 1  # b: table and connection
        assert a.reads["address_rpcs"] == CHAIN - 1  # b, c, d, e: one GET_VALUE per hop
        assert a.rejected == rejected + 1  # c's invalid copy
        assert a.reads["address_rpcs"] < 2 * (CHAIN - 1)  # a FIND_NODE walk, then GET_VALUE, costs twice
        with trio.fail_after(WAIT):
            assert await a.get_address(key) == value and a.reads["address_local"] == 1


async def test_get_value_with_closer_peers_fails_loudly_on_another_shape() -> None:
    """libp2p_compat.value_and_closer_from_peer: (value, closer peers), or CompatError if upstream changed."""
    import pytest

    from p2pvpn import libp2p_compat

    async with AsyncExitStack() as stack:
        hosts, dhts = await dht_hosts(stack, 3, NETWORK)
        a, b, _ = dhts
        for other in hosts[1:]:
            await hosts[0].libp2p.connect(PeerInfo(other.peer_id, other.libp2p.get_addrs()))
        await hosts[1].libp2p.connect(PeerInfo(hosts[2].peer_id, hosts[2].libp2p.get_addrs()))
        assert await until(lambda: b.routing_table_size() >= 2, WAIT), b.routing_table_size()
        with trio.fail_after(WAIT):
            value, closer = await libp2p_compat.value_and_closer_from_peer(a.kad, hosts[1].peer_id, b"/p2pvpn/x/addr/y")
        assert value is None and closer == [hosts[2].peer_id]  # b names c, never a itself

        async def old_shape(peer_id: ID, key: bytes, **_: object) -> bytes | None:
            return None

        a.kad.value_store._get_from_peer = old_shape  # an upstream that dropped return_closer_peers
        with pytest.raises(libp2p_compat.CompatError, match="GET_VALUE with closer peers"):
            await libp2p_compat.value_and_closer_from_peer(a.kad, hosts[1].peer_id, b"/p2pvpn/x/addr/y")


async def test_a_slow_peers_late_answer_is_taken_while_the_walk_goes_on(autojump_clock: object,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dht._walk: a GET_VALUE silent past WALK_RPC_TIMEOUT frees its slot, and its late value still wins."""
    from types import SimpleNamespace

    from p2pvpn.discovery import dht as dht_module
    from p2pvpn.discovery import walk

    # a (slow) holds the value; b and c answer at once with peers that keep the walk busy past a's answer
    answers = {"a": (dht_module.WALK_RPC_TIMEOUT + 1.0, b"value", []), "b": (0.1, None, ["d"]),
               "c": (0.1, None, ["e"]), "d": (2.0, None, ["f"]), "e": (2.0, None, ["g"]),
               "f": (3.0, None, ["h"]), "g": (3.0, None, ["h"]), "h": (3.0, None, [])}  # fmt: skip

    async def value_and_closer(kad: object, peer: str, key: bytes) -> tuple[bytes | None, list[str]]:
        delay, value, closer = answers[peer]
        await trio.sleep(delay)
        return value, closer

    class Accept:
        def __init__(self, dht: object) -> None:
            pass

        def validate(self, key: str, value: bytes) -> None:
            assert value == b"value"

    monkeypatch.setattr(dht_module.libp2p_compat, "value_and_closer_from_peer", value_and_closer)
    monkeypatch.setattr(dht_module, "_ByKey", Accept)
    order = "abcdefgh"
    lookup: walk.Lookup[str] = walk.Lookup(0, order.index, ["a", "b", "c"])
    trace: dict[str, object] = {}
    start = trio.current_time()
    value = await dht_module.Dht._walk(SimpleNamespace(kad=None), "/p2pvpn/n/addr/100.64.0.9", lookup, (), trace)  # type: ignore[arg-type]
    assert value == b"value" and lookup.found_at == "a" and lookup.late == 1 and lookup.failures == 1
    assert trio.current_time() - start == dht_module.WALK_RPC_TIMEOUT + 1.0  # taken when it came, not dropped
    assert ("s" in [m for _, m in trace["replies"]]) and trace["replies"][-1][1] == "V"  # type: ignore[index]
