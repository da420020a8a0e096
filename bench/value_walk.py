"""Address-record reads over real py-libp2p hosts: Dht.get_address's value walk against py-libp2p's get_value.

Theory of operation
-------------------
N hosts (``--nodes``) in this one process on loopback, each a Dht server.
Every node connects to the 3 bootstrap nodes (n0..n2) and to ``--degree``
random others; routing tables then hold the connected DHT servers (the
hygiene pass). One signed address record (docs/protocol.md §18.2) is put
straight into the value stores of the ``--holders`` nodes closest to its key
(XOR of SHA-256s, the global truth, as after a converged republish with that
many holders), so most askers hold neither it nor a connection to a holder.

Then ``--lookups`` random askers (not holders) each read it twice, in
alternating order, with their local copy removed before each read:

* **walk**: ``Dht.get_address`` (first round + iterative GET_VALUE, stop at
  the first valid record);
* **libp2p**: ``KadDHT.get_value(key, quorum=1)`` (FIND_NODE walk to
  convergence, then GET_VALUE).

RPCs per read = streams the asker opens during the read (its host's
``new_stream`` calls, counted by wrapping that public method of the asker's
host for the read); time per read on trio's clock. Same run, same machine
load: compare the two columns, not absolute times.

Run: ``python bench/scale.py``'s neighbour, no root needed::

    python bench/value_walk.py --nodes 30 --holders 3 --lookups 20 --json walk.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import trio
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.discovery.address import keys_of
from p2pvpn.discovery.dht import Dht, _position
from p2pvpn.discovery.record import make_record, seal
from p2pvpn.testing.dhts import dht_hosts

NETWORK = "walk-bench"
BOOTSTRAPS = 3
READ_TIMEOUT = 30.0  # seconds one read may take before it counts as failed
SETTLE_TIMEOUT = 60.0  # seconds for the routing tables to fill


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3), "mean": round(statistics.fmean(ordered), 3), "n": len(ordered)}


async def _read(dht: Dht, key: str, how: str) -> tuple[bool, int, float]:
    """One read by ``how``: (found, streams opened, seconds)."""
    host = dht.host.libp2p
    dht.kad.value_store.remove(key.encode())
    original = host.new_stream
    count = 0

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        return await original(*args, **kwargs)

    host.new_stream = counting
    start = trio.current_time()
    value = None
    try:
        with trio.move_on_after(READ_TIMEOUT):
            try:
                value = await (dht.get_address(key) if how == "walk" else dht.kad.get_value(key, quorum=1))
            except Exception as exc:  # noqa: BLE001 - py-libp2p raises assorted types when nothing valid is found
                print(f"{how} read failed: {exc!r}", file=sys.stderr)
    finally:
        host.new_stream = original
        dht.kad.value_store.remove(key.encode())
    return value is not None, count, trio.current_time() - start


async def run(nodes: int, holders: int, lookups: int, degree: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    owner_key = Ed25519PrivateKey.new(bytes([11]) * 32)
    record = make_record(ID.from_pubkey(owner_key.get_public_key()), NETWORK, seq=1, now=time.time(),
                         addrs=("/ip4/198.18.0.11/tcp/4001",))
    key, value = keys_of(NETWORK, record)[0], seal(record, owner_key)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        hosts, dhts = await dht_hosts(stack, nodes, NETWORK)
        links = set()
        for i in range(1, nodes):
            for j in [*range(min(BOOTSTRAPS, i)), *rng.sample(range(nodes), min(degree, nodes))]:
                if j != i and (j, i) not in links:
                    links.add((i, j))
        for i, j in sorted(links):
            with trio.fail_after(SETTLE_TIMEOUT):
                await hosts[i].libp2p.connect(PeerInfo(hosts[j].peer_id, hosts[j].libp2p.get_addrs()))
        with trio.move_on_after(SETTLE_TIMEOUT):
            while any(d.routing_table_size() < 2 for d in dhts):
                await trio.sleep(0.2)
        await trio.sleep(3.0)  # the hygiene passes of the last connections
        target = _position(key.encode())
        by_distance = sorted(range(nodes), key=lambda i: _position(hosts[i].peer_id.to_bytes()) ^ target)
        holding = set(by_distance[:holders])
        for i in holding:
            dhts[i].kad.value_store.put(key.encode(), value)
        askers = rng.sample([i for i in range(nodes) if i not in holding], min(lookups, nodes - holders))
        reads: dict[str, list[tuple[bool, int, float]]] = {"walk": [], "libp2p": []}
        for n, i in enumerate(askers):
            order = ("walk", "libp2p") if n % 2 == 0 else ("libp2p", "walk")
            for how in order:
                reads[how].append(await _read(dhts[i], key, how))
        tables = [d.routing_table_size() for d in dhts]
        for i in holding:  # the holders keep it; nobody else should have stored it
            dhts[i].kad.value_store.remove(key.encode())
    result: dict[str, Any] = {
        "config": {"nodes": nodes, "holders": holders, "lookups": len(askers), "degree": degree, "seed": seed},
        "routing_table": _summary(tables), "wall_s": round(time.monotonic() - started, 1),
    }
    for how, rows in reads.items():
        result[how] = {"found": sum(1 for f, _, _ in rows if f), "rpcs": _summary([c for _, c, _ in rows]),
                       "seconds": _summary([s for _, _, s in rows])}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/value_walk.py", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--holders", type=int, default=3, help="nodes closest to the key that hold the record")
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--degree", type=int, default=3, help="random connections per node, beside the bootstraps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    if not (BOOTSTRAPS < args.nodes <= 200 and 1 <= args.holders < args.nodes and 1 <= args.lookups <= 1000
            and 0 <= args.degree <= 50):
        print("bench/value_walk.py: need 3 < nodes <= 200, 1 <= holders < nodes, 1 <= lookups <= 1000, "
              "0 <= degree <= 50", file=sys.stderr)
        return 2
    result = trio.run(run, args.nodes, args.holders, args.lookups, args.degree, args.seed)
    try:
        load = list(__import__("os").getloadavg())
    except OSError:
        load = []
    result["load_end"] = [round(x, 2) for x in load]
    for how in ("walk", "libp2p"):
        r = result[how]
        print(f"{how:7} found {r['found']}/{result['config']['lookups']}  rpcs {r['rpcs']}  seconds {r['seconds']}")
    print(f"routing tables {result['routing_table']}; load at the end {result['load_end']}; {result['wall_s']} s")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
