"""An idle node's DHT: hygiene on new connections, not every few seconds; polls without walks (issue 16).

Two real py-libp2p hosts on loopback, each with our Dht in server mode:
a connection makes the pass run within HYGIENE_SETTLE s and puts the
other DHT server in the table; without new connections no pass runs
for a while (an idle node does no periodic walk of its table).
"""

from __future__ import annotations

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.validator import Validator

from p2pvpn.discovery import dht as dht_module
from p2pvpn.discovery.dht import Dht
from p2pvpn.host import Host
from p2pvpn.testing.dhts import until

NETWORK = "hygiene-test"
WAIT = 20.0  # seconds for a pass after the connection (HYGIENE_SETTLE is 2 s; a loaded CI machine is slow)
QUIET = 4.0  # seconds without a new connection in which no pass may run


async def test_a_new_connection_triggers_a_hygiene_pass_and_idle_runs_none() -> None:
    assert dht_module.HYGIENE_INTERVAL >= 10 * dht_module.HYGIENE_SETTLE  # the idle period is long
    hosts = [Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) for _ in range(2)]
    async with hosts[0].running(), hosts[1].running():
        dhts = [Dht(h, NETWORK, server=True) for h in hosts]
        async with dhts[0].running(), dhts[1].running():
            a, b = dhts
            await trio.sleep(QUIET)  # no connection yet: no pass
            assert a.hygiene_passes == 0 and b.hygiene_passes == 0
            await hosts[0].libp2p.connect(PeerInfo(hosts[1].peer_id, hosts[1].libp2p.get_addrs()))
            assert await until(lambda: a.hygiene_passes >= 1 and b.hygiene_passes >= 1, WAIT), \
                (a.hygiene_passes, b.hygiene_passes)
            assert a.kad.routing_table.peer_in_table(hosts[1].peer_id)
            assert b.kad.routing_table.peer_in_table(hosts[0].peer_id)
            settled = a.hygiene_passes
            await trio.sleep(QUIET)  # the same connection, nothing new: no further pass
            assert a.hygiene_passes == settled


class _Highest(Validator):
    """Values b"v<n>": valid if so shaped, the highest n is best."""

    def validate(self, key: str, value: bytes) -> None:
        if not value.startswith(b"v") or not value[1:].isdigit():
            raise ValueError("not a test value")

    def select(self, key: str, values: list[bytes]) -> int:
        return max(range(len(values)), key=lambda i: int(values[i][1:]))


async def test_a_polled_value_comes_from_the_closest_peers_in_one_round_trip() -> None:
    """Dht.get (polled every 30 s by membership and policy) asks our table's closest peers, no walk."""
    key = "/p2pvpn/test/polled"
    hosts = [Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) for _ in range(3)]
    async with hosts[0].running(), hosts[1].running(), hosts[2].running():
        dhts = [Dht(h, NETWORK, server=True) for h in hosts]
        for d in dhts:
            d.extra_validators[key] = _Highest()
        async with dhts[0].running(), dhts[1].running(), dhts[2].running():
            a, b, c = dhts
            for other in hosts[1:]:
                await hosts[0].libp2p.connect(PeerInfo(other.peer_id, other.libp2p.get_addrs()))
            assert await until(lambda: a.routing_table_size() >= 2, WAIT), a.routing_table_size()
            walks: list[str] = []

            async def no_walk(k: str, quorum: int = 0) -> bytes | None:
                walks.append(k)
                return b"v0"

            a.kad.get_value = no_walk  # type: ignore[method-assign]
            b.kad.value_store.put(key.encode(), b"v1")
            c.kad.value_store.put(key.encode(), b"v2")
            assert await a.get(key) == b"v2"  # the best of both answers
            assert walks == [] and a.kad.value_store.get(key.encode()) is None  # nothing walked, nothing stored
            b.kad.value_store.remove(key.encode())
            c.kad.value_store.remove(key.encode())
            assert await a.get(key) == b"v0" and walks == [key]  # nobody close has it: the full lookup

            async def nothing(k: str, quorum: int = 0) -> bytes | None:
                walks.append(k)
                return None

            a.kad.get_value = nothing  # type: ignore[method-assign]
            assert await a.get(key) is None and walks == [key, key]
            assert await a.get(key) is None and walks == [key, key]  # found nothing a moment ago: no new walk
            c.kad.value_store.put(key.encode(), b"v3")
            assert await a.get(key) == b"v3" and walks == [key, key]  # a value stored meanwhile: the closest have it


async def test_an_address_lookup_asks_connected_servers_outside_the_table_before_walking() -> None:
    """Dht.get_address's first round: our table's closest and the connected DHT servers (rules.first_asks)."""
    import time

    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    from p2pvpn.discovery.address import keys_of
    from p2pvpn.discovery.record import make_record, seal

    owner_key = Ed25519PrivateKey.new(bytes([7]) * 32)
    record = make_record(ID.from_pubkey(owner_key.get_public_key()), NETWORK, seq=1, now=time.time(),
                         addrs=("/ip4/198.18.0.7/tcp/4001",))
    key, value = keys_of(NETWORK, record)[0], seal(record, owner_key)
    hosts = [Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"]) for _ in range(3)]
    async with hosts[0].running(), hosts[1].running(), hosts[2].running():
        dhts = [Dht(h, NETWORK, server=True) for h in hosts]
        async with dhts[0].running(), dhts[1].running(), dhts[2].running():
            a, b, c = dhts
            for other in hosts[1:]:
                await hosts[0].libp2p.connect(PeerInfo(other.peer_id, other.libp2p.get_addrs()))
            assert await until(lambda: a.routing_table_size() >= 2, WAIT), a.routing_table_size()
            a.kad.routing_table.remove_peer(hosts[2].peer_id)  # c: connected, not in a's table
            assert a.kad.routing_table.get_peer_ids() == [hosts[1].peer_id]
            walks: list[str] = []

            async def walk(k: str, quorum: int = 0) -> bytes | None:
                walks.append(k)
                return None

            a.kad.get_value = walk  # type: ignore[method-assign]
            c.kad.value_store.put(key.encode(), value)
            assert await a.get_address(key) == value and walks == []  # c answered, in the first round (no get_value)
            assert a.reads["address_connected"] == 1 and a.reads["address_asked"] == 2  # b (table) and c
            assert await a.get_address(key) == value and a.reads["address_local"] == 1  # kept for the next packet
            a.kad.value_store.remove(key.encode())
            c.kad.value_store.remove(key.encode())
            assert await a.get_address(key) is None and walks == []  # nobody holds it: our walk, not py-libp2p's
            assert a.reads["address_missed"] == 1 and a.reads["address_asked"] == 4


async def test_publish_stores_address_keys_first_and_one_failure_stops_no_other() -> None:
    """Dht.publish: the address keys, the record key, then the role keys, each on its own."""
    from p2pvpn.discovery import record as rec

    host = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
    async with host.running():
        d = Dht(host, NETWORK, server=True)
        started: list[str] = []

        async def put_value(key: str, value: bytes) -> None:
            started.append(key)
            if key.endswith("/a"):
                raise ValueError("Refusing to replace newer value with the older one")

        async def provide(key: str) -> None:
            started.append(key)

        d.kad.put_value = put_value  # type: ignore[method-assign]
        d.kad.provide = provide  # type: ignore[method-assign]
        keys = ["/p2pvpn/x/addr/a", "/p2pvpn/x/addr/b"]
        with trio.fail_after(WAIT):
            await d.publish(host.peer_id, b"sealed", ["members"], keys)
        assert started == [*keys, rec.record_key(NETWORK, host.peer_id), rec.provider_key(NETWORK, "members")]
        assert d.publish_failures == 1  # the refused one, counted; the others went on
