"""Cost per packet of the network policy on the ingress path (docs/performance.md, "Network policy").

Runs the real ingress steps for packets from the datagram path
(p2pvpn.dataplane.ingress.datagram_receiver: source check, destination
check, policy, TUN write) into a TUN that takes a packet for free, so what
is left is the Python work per packet. Each case is measured in the same
run, interleaved, best of ``--rounds``, so the ratios hold on a busy
machine:

* ``baseline``: no policy (a network without owner, or allow-all: the
  firewall is inactive and not called);
* ``tracked``: a policy is active; every packet belongs to a tracked flow
  the peer opened (the common case under a policy);
* ``reply``: default deny; every packet is a reply to a flow we opened;
* ``denied_new``: default deny, 16 rules that do not match; every packet is
  a new flow (new source port), denied after walking the rules: a peer
  spraying us;
* ``egress``: the outbound hook alone (``Firewall.outbound``) per packet
  of an established flow (compare with ``baseline``, a whole ingress pass).

Flows are established first (the SYN and SYN-ACK go through the slow path
once), as in a real transfer.

    python bench/policy_ingress.py [--packets 200000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections.abc import Callable

import trio

from p2pvpn.addressing import OverlayAddresses
from p2pvpn.dataplane.ingress import datagram_receiver
from p2pvpn.dataplane.peer_queue import PacketQueue
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import Action, Policy, Proto, Rule, Selector
from p2pvpn.routing import RouteTable
from p2pvpn.session.peer import Peer

NID = "tgegoektrvlu43fcqzq352hc4a5usevm"
US, THEM = bytes([100, 64, 0, 2]), bytes([100, 64, 0, 1])
BATCH = 64


class NullTun:
    """A TUN that accepts every packet at no cost: the benchmark measures Python, not the kernel."""

    mtu = 1500
    offload = False

    def write(self, packet: bytes) -> bool:
        return True

    def write_record(self, record: bytes) -> bool:
        return True


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int = 0x10, size: int = 1400) -> bytes:
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    payload = bytes(size - 20 - len(l4))
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 6, 0, src, dst) + l4 + payload


def policy(default: Action, rules: list[Rule]) -> Policy:
    return Policy(NID, 1, default, tuple(rules), bytes(32), None, b"\x01")


def setup(firewall: Firewall | None) -> tuple[Callable[[list[bytes]], None], Peer]:
    from libp2p.peer.id import ID

    peer_id = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(32)))
    routes: RouteTable[ID] = RouteTable()
    routes.set_peer(peer_id, [THEM])
    peer = Peer(peer_id, OverlayAddresses(None, None, 0), PacketQueue(16))  # type: ignore[arg-type]
    return datagram_receiver(peer, routes, NullTun(), lambda d: d == US, firewall), peer  # type: ignore[arg-type]


def cases() -> dict[str, Callable[[int], float]]:
    groups = lambda peer: ("A",)  # noqa: E731
    deny_ssh = [Rule(Action.DENY, Selector(group="A"), Selector(), Proto.TCP, (22, 22))]
    no_match = [Rule(Action.ALLOW, Selector(group=f"g{i}"), Selector(), Proto.TCP, (1000 + i, 1000 + i))
                for i in range(16)]

    def run(deliver: Callable[[list[bytes]], None], batches: list[list[bytes]]) -> float:
        start = time.perf_counter()
        for batch in batches:
            deliver(batch)
        return time.perf_counter() - start

    def baseline(n: int) -> float:
        deliver, peer = setup(None)
        batch = [tcp(THEM, US, 40000, 80)] * BATCH
        return run(deliver, [batch] * (n // BATCH))

    def tracked(n: int) -> float:
        fw = Firewall(policy(Action.ALLOW, deny_ssh), bytes(38), (), groups)
        deliver, peer = setup(fw)
        deliver([tcp(THEM, US, 40000, 80, 0x02)])  # SYN: opens the flow
        fw.outbound(tcp(US, THEM, 80, 40000, 0x12), 0, time.monotonic())  # our SYN-ACK: established
        batch = [tcp(THEM, US, 40000, 80)] * BATCH
        t = run(deliver, [batch] * (n // BATCH))
        assert peer.stats.packets_in == 1 + BATCH * (n // BATCH), "tracked packets were dropped"
        return t

    def reply(n: int) -> float:
        fw = Firewall(policy(Action.DENY, []), bytes(38), (), groups)
        deliver, peer = setup(fw)
        fw.outbound(tcp(US, THEM, 50000, 443, 0x02), 0, time.monotonic())
        deliver([tcp(THEM, US, 443, 50000, 0x12)])  # their SYN-ACK: established
        batch = [tcp(THEM, US, 443, 50000)] * BATCH
        t = run(deliver, [batch] * (n // BATCH))
        assert peer.stats.packets_in == 1 + BATCH * (n // BATCH), "replies were dropped"
        return t

    def denied_new(n: int) -> float:
        fw = Firewall(policy(Action.DENY, no_match), bytes(38), (), groups)
        deliver, peer = setup(fw)
        packets = [tcp(THEM, US, 1024 + i % 60000, 22, 0x02) for i in range(n)]
        t = run(deliver, [packets[i:i + BATCH] for i in range(0, n - n % BATCH, BATCH)])
        assert peer.stats.packets_in == 0 and fw.denied["default"] == n - n % BATCH
        return t

    def egress(n: int) -> float:
        fw = Firewall(policy(Action.DENY, []), bytes(38), (), groups)
        packet = tcp(US, THEM, 50000, 443)
        now = time.monotonic()
        fw.outbound(tcp(US, THEM, 50000, 443, 0x02), 0, now)
        fw.inbound(bytes(38), tcp(THEM, US, 443, 50000, 0x12), 0, now)  # established
        start = time.perf_counter()
        for _ in range(n):
            fw.outbound(packet, 0, now)
        return time.perf_counter() - start

    return {"baseline": baseline, "tracked": tracked, "reply": reply, "denied_new": denied_new, "egress": egress}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.packets - args.packets % BATCH
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved: every case sees the same machine state
        for name, case in cases().items():
            best[name] = min(best.get(name, float("inf")), case(n) / n * 1e9)
    base = best["baseline"]
    result = {name: {"ns_per_packet": round(ns), "vs_baseline": round(ns / base, 2)} for name, ns in best.items()}
    if args.json:
        print(json.dumps(result))
        return
    for name, row in result.items():
        print(f"{name:11} {row['ns_per_packet']:6d} ns/packet  {row['vs_baseline']:5.2f} x baseline")


if __name__ == "__main__":
    trio.run(trio.sleep, 0)  # the Peer dataclass makes trio.Events: import trio's runtime once, outside the timing
    main()
