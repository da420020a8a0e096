"""Discovery's announce loop on trio's virtual clock: the timer's gaps, and a publish when the routing table grew.

The DHT is a stand-in that counts publishes and reports a table size the
test sets; the record is real (sealed with a real key, valid addresses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pvpn.addressing import derive
from p2pvpn.discovery import service
from p2pvpn.discovery.rules import EARLY_JITTER, EARLY_REPUBLISH, GROW_GAP
from p2pvpn.discovery.service import Discovery


@dataclass
class CountingDht:
    size: int = 3
    publish_failures: int = 0
    at: list[tuple[float, int]] = field(default_factory=list)  # (when, table size) of each publish
    host: object = None

    roles: list[list[str]] = field(default_factory=list)

    async def publish(self, peer_id: ID, sealed: bytes, roles: list[str], address_keys: list[str]) -> None:
        assert len(address_keys) == 2  # the record and its two address keys
        self.roles.append(roles)
        self.at.append((trio.current_time(), self.routing_table_size()))
        await trio.sleep(2.0)  # a publish takes time: the table must not trigger one while it runs

    def routing_table_size(self) -> int:
        return self.size


async def test_publishes_follow_the_early_gaps_and_a_grown_table(autojump_clock: object) -> None:
    keys = create_new_key_pair()
    peer = ID.from_pubkey(keys.public_key)
    dht = CountingDht()
    disc = Discovery(dht, keys, peer, "default", lambda: derive(peer.to_bytes(), "default"), lambda: [],  # type: ignore[arg-type]
                     [], lambda record, how: None, lambda peer_id: None, limits=object(),  # type: ignore[arg-type]
                     publish_jitter=(0.0, 0.0))  # exact times here; the spread is tested in test_discovery_rules
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disc._announce_loop)
        nursery.start_soon(disc._table_watch)
        await trio.sleep(1.0)
        assert len(dht.at) == 1  # at start
        await trio.sleep(2.0 + EARLY_REPUBLISH[0] + 0.1)
        assert len(dht.at) == 2 and disc.publishes == {"timer": 1, "asked": 0, "table_grew": 0}
        assert dht.at[1][0] - dht.at[0][0] == EARLY_REPUBLISH[0] + 2.0  # the gap counts from the publish's end
        dht.size = 5  # grown, but by too few
        await trio.sleep(GROW_GAP + 2 * service.TABLE_CHECK)
        assert disc.publishes["table_grew"] == 0
        dht.size = 12  # more than doubled since the last publish (3): published again, well before the timer
        await trio.sleep(service.TABLE_CHECK + 0.6)
        assert disc.publishes["table_grew"] == 1 and dht.at[-1][1] == 12
        await trio.sleep(GROW_GAP + 2 * service.TABLE_CHECK)
        assert disc.publishes["table_grew"] == 1  # the same table: nothing more
        disc.republish_soon()
        await trio.sleep(0.6)
        assert disc.publishes["asked"] == 1 and len(dht.at) == 4
        nursery.cancel_scope.cancel()


@dataclass
class BootstrappingDht(CountingDht):
    """A DHT whose table is empty until ``bootstrap`` has run for ``takes`` seconds (then ``size`` peers)."""

    takes: float = 3.0
    bootstrapped: bool = False

    async def bootstrap(self, peers: list[object]) -> int:
        await trio.sleep(self.takes)
        self.bootstrapped = True
        return len(peers)

    def routing_table_size(self) -> int:
        return self.size if self.bootstrapped else 0


async def test_an_on_demand_member_provides_no_members_key_and_its_gaps_are_drawn(autojump_clock: object) -> None:
    keys = create_new_key_pair()
    peer = ID.from_pubkey(keys.public_key)
    nodes = []
    async with trio.open_nursery() as nursery:
        for in_use in (None, lambda p: False):  # full mesh, then on demand; default jitter
            dht = CountingDht()
            disc = Discovery(dht, keys, peer, "default", lambda: derive(peer.to_bytes(), "default"),  # type: ignore[arg-type]
                             lambda: [], [], lambda record, how: None, lambda peer_id: None, limits=object(),  # type: ignore[arg-type]
                             in_use=in_use)
            nursery.start_soon(disc._announce_loop)
            nodes.append(dht)
        await trio.sleep(2.0 + EARLY_REPUBLISH[0] * (1 + EARLY_JITTER) + 0.1)
        nursery.cancel_scope.cancel()
    mesh, demand = nodes
    assert len(mesh.roles) == len(demand.roles) == 2
    assert all(r == ["members"] for r in mesh.roles) and all(r == [] for r in demand.roles)
    for dht in nodes:
        gap = dht.at[1][0] - dht.at[0][0] - 2.0  # from the end of the first publish
        assert EARLY_REPUBLISH[0] * (1 - EARLY_JITTER) <= gap <= EARLY_REPUBLISH[0] * (1 + EARLY_JITTER)
    assert mesh.at[1][0] != demand.at[1][0]  # two nodes started together republish apart


def bootstrapping(dht: CountingDht, nursery: trio.Nursery) -> Discovery:
    """A Discovery with one bootstrap peer, its bootstrap and announce loops started in ``nursery``."""
    keys = create_new_key_pair()
    peer = ID.from_pubkey(keys.public_key)
    boot = [(ID.from_pubkey(create_new_key_pair().public_key), "/ip4/198.18.0.1/tcp/4242")]
    disc = Discovery(dht, keys, peer, "default", lambda: derive(peer.to_bytes(), "default"), lambda: [],  # type: ignore[arg-type]
                     boot, lambda record, how: None, lambda peer_id: None, limits=object(),  # type: ignore[arg-type]
                     publish_jitter=(0.0, 0.0))
    nursery.start_soon(disc._bootstrap_loop)
    nursery.start_soon(disc._announce_loop)
    return disc


async def test_the_first_publish_waits_for_the_first_bootstrap_and_is_not_repeated_for_it(autojump_clock: object) -> None:
    dht = BootstrappingDht(size=9)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        disc = bootstrapping(dht, nursery)
        await trio.sleep(dht.takes + 1.0)
        assert dht.at == [(start + dht.takes, 9)]  # after the bootstrap, with its table; not with an empty one
        await trio.sleep(EARLY_REPUBLISH[0] - 1.0)  # the timer's publish is 2 s (the publish) + gap after it
        assert len(dht.at) == 1 and disc.publishes["asked"] == 0  # the bootstrap's "publish again" was this one
        nursery.cancel_scope.cancel()


async def test_the_first_publish_waits_for_a_slow_bootstrap_only_so_long(autojump_clock: object) -> None:
    dht = BootstrappingDht(size=9, takes=service.FIRST_PUBLISH_WAIT + 20)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        disc = bootstrapping(dht, nursery)
        await trio.sleep(service.FIRST_PUBLISH_WAIT + 1.0)
        assert dht.at == [(start + service.FIRST_PUBLISH_WAIT, 0)]
        await trio.sleep(dht.takes)  # the bootstrap answers later: its table is worth a publish now
        assert disc.publishes["asked"] == 1 and dht.at[-1][1] == 9
        nursery.cancel_scope.cancel()
