"""The DHT's routing-table hygiene runs on new connections, not every few seconds (issue 16, idle CPU).

Two real py-libp2p hosts on loopback, each with our Dht in server mode:
a connection makes the pass run within HYGIENE_SETTLE s and puts the
other DHT server in the table; without new connections no pass runs
for a while (an idle node does no periodic walk of its table).
"""

from __future__ import annotations

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.discovery import dht as dht_module
from p2pvpn.discovery.dht import Dht
from p2pvpn.host import Host

NETWORK = "hygiene-test"
WAIT = 20.0  # seconds for a pass after the connection (HYGIENE_SETTLE is 2 s; a loaded CI machine is slow)
QUIET = 4.0  # seconds without a new connection in which no pass may run


async def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return True
    return False


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
            assert await _until(lambda: a.hygiene_passes >= 1 and b.hygiene_passes >= 1, WAIT), \
                (a.hygiene_passes, b.hygiene_passes)
            assert a.kad.routing_table.peer_in_table(hosts[1].peer_id)
            assert b.kad.routing_table.peer_in_table(hosts[0].peer_id)
            settled = a.hygiene_passes
            await trio.sleep(QUIET)  # the same connection, nothing new: no further pass
            assert a.hygiene_passes == settled
