"""A stranger flood against one node, in process: do members still get tunnels, and what do the limits count?

The issue 12 scenario: ``--attackers`` fresh identities each open ``--streams``
silent tunnel streams at once to the owner of a network (p2pvpn.testing.owned:
a stranger's stream is held until its Hello shows a certificate or times out);
meanwhile a member, with a certificate and listed as a static peer, dials
the node. Prints one JSON object: how long the member took, the node's
handshake failures and its ``limits`` counters (docs/limits.md).

    python bench/limits_flood.py --attackers 50 --streams 10

Loopback only; bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from p2pvpn.host import Host
from p2pvpn.testing.cluster import Cluster, free_port
from p2pvpn.testing.flood import attack_while_member_joins


async def run(attackers: int, streams: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(Path(directory))
        nid = cluster.owned("v", ["m"])  # v owns the network, m holds a certificate
        victim = cluster.node("v", peers=[cluster.addr("m")], network=nid)
        member = cluster.node("m", peers=[cluster.addr("v")], dht="off", network=nid)
        hosts = [Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(attackers)]
        opened: list[int] = []
        refused: list[int] = []
        with trio.fail_after(timeout):
            async with AsyncExitStack() as stack:
                for host in hosts:
                    await stack.enter_async_context(host.running())
                status = await attack_while_member_joins(victim, member, hosts, streams, opened, refused)
    member_state = next(p["state"] for p in status["peers"] if p["peer_id"] == str(member.peer_id))
    return {"attackers": attackers, "streams_each": streams, "member_state": member_state,
            "member_protected": status["member_protected"], "member_start_to_tunnel_s": round(status["member_seconds"], 2),
            "stranger_streams_refused_at_open": len(refused), "handshake_failures": status["handshake_failures"],
            "limits": {k: v for k, v in status["limits"].items() if v["hits"] or v["in_use"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args.attackers, args.streams, args.timeout)))


if __name__ == "__main__":
    main()
