"""The network policy (docs/protocol.md §17) in Go and Python, case by case, offline.

The Go peer (interop/go-peer, written from §17) and the reference judge the same bytes and the
same packets:

* policies: §17.7's vector and its negative vectors, re-signed edge cases (canonical form,
  field limits, signers, admins at a time and under revocation) and seeded random mutations:
  the same accept/refuse verdict on every one;
* the DHT key: a Python owner's policy, stored in a Go DHT server, reaches a Go member that has
  no tunnel (so no push);
* the stateful filter: seeded random scenarios (policies with random rules, a node with
  groups, peers with groups, packets of every kind in both directions, time passing, a better
  policy arriving midway): the same verdict on every packet and the same counters at the end.

The reference side is driven the way its data path drives it: the firewall is consulted only
while ``active`` (§17.5 step 1).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio
from gopeer import LOOPBACK_LISTEN, GoPeer, mutations, run_tool
from policy.packets import ACK, FIN, RST, SYN, fragment, icmp, tcp, udp

from p2pvpn.membership import canonical, cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import Signer, network_id, peer_id_bytes, signer_from_seed
from p2pvpn.policy import policy_pb2 as pb
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import POLICY_CONTEXT, open_bytes, open_policy
from p2pvpn.testing.cluster import running

T0 = 1767225600
DAY = 86400
OWNER = signer_from_seed(bytes([0x10]) * 32)
NID = network_id(OWNER.public_key)
KEYS = {n: signer_from_seed(bytes([n]) * 32) for n in range(1, 5)}
PIDS = {n: peer_id_bytes(k.public_key) for n, k in KEYS.items()}


def sign(body: bytes, signer: Signer = OWNER, issuer_cert: bytes = b"", context: bytes = POLICY_CONTEXT) -> bytes:
    """A SignedPolicy around any body bytes, validly signed: only the rules can refuse it."""
    return canonical.encode(pb.SignedPolicy(policy=body, signature=signer.sign(context + body),
                                            issuer_certificate=issuer_cert))


def body(signer: Signer = OWNER, **fields: Any) -> bytes:
    values: dict[str, Any] = dict(network_id=NID, seq=1, default_action=1, rules=[], issuer=signer.public_key)
    values.update(fields)
    return pb.Policy(**values).SerializeToString(deterministic=True)


def python_ok(data: bytes, now: int, revoked: dict[bytes, int]) -> bool:
    try:
        open_policy(data, NID, now, revoked)
    except MembershipError:
        return False
    return True


def admin_cert(n: int, roles: int = 5, lifetime: int = 365 * DAY) -> bytes:
    from p2pvpn import addressing
    a = addressing.derive(PIDS[n], NID)
    return cert.issue(OWNER, network=NID, peer_id=PIDS[n], name=f"admin{n}", ipv4=a.ipv4, ipv6=a.ipv6,
                      roles=roles, groups=(), not_before=T0, not_after=T0 + lifetime)


def policy_cases() -> list[tuple[str, bytes, dict[str, Any]]]:
    rule = pb.Rule
    at: dict[str, Any] = {"now": T0}
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("empty allow", sign(body()), at),
        ("default deny", sign(body(default_action=2)), at),
        ("seq 0", sign(body(seq=0)), at), ("default 0", sign(body(default_action=0)), at),
        ("default 3", sign(body(default_action=3)), at),
        ("seq 2^64-1", sign(body(seq=2**64 - 1)), at),
        ("other network", sign(body(network_id="a" * 32)), at),
        ("network upper-case", sign(body(network_id=NID.upper())), at),
        ("stranger", sign(body(KEYS[3]), KEYS[3]), at),
        ("certificate context", sign(body(), context=cert.CERT_CONTEXT), at),
        ("issuer 31 bytes", sign(body(issuer=OWNER.public_key[:31])), at),
        ("unknown field", sign(body() + b"\x78\x01"), at),
        ("seq twice", sign(body() + b"\x10\x02"), at),
        ("fields out of order", sign(b"\x10\x01" + body(seq=0)), at),
        ("seq non-minimal", sign(body(seq=0).replace(b"\x18\x01", b"\x10\x81\x00\x18\x01", 1)), at),
        # default_action = 2^32 + 1: a runtime keeps the low 32 bits (1), which re-encode differently
        ("default above 2^32",
         sign(body(default_action=0).replace(b"\x2a\x20", b"\x18\x81\x80\x80\x80\x10\x2a\x20", 1)), at),
        ("empty issuer_certificate on the wire", sign(body()) + b"\x1a\x00", at),
        ("trailing junk", sign(body()) + b"\x00", at),
    ]
    good_rules = [
        rule(action=2, from_group="A", to_group="B", proto=6, port_first=22, port_last=22),
        rule(action=1, from_peer=PIDS[1], proto=17, port_first=5000, port_last=5010),
        rule(action=1, proto=1), rule(action=2),
        rule(action=1, to_peer=PIDS[2], proto=17, port_first=1, port_last=65535),
        rule(action=2, from_group="x" * 32), rule(action=2, to_group="a.b_c-D9"),
    ]
    bad_rules = {
        "action 0": rule(action=0), "action 3": rule(action=3), "proto 2": rule(action=1, proto=2),
        "proto 58": rule(action=1, proto=58), "icmp with ports": rule(action=1, proto=1, port_first=1, port_last=1),
        "any with ports": rule(action=1, port_first=1, port_last=1),
        "port_first 0": rule(action=1, proto=6, port_first=0, port_last=5),
        "reversed": rule(action=1, proto=6, port_first=9, port_last=8),
        "port 65536": rule(action=1, proto=17, port_first=1, port_last=65536),
        "group of 33": rule(action=1, from_group="x" * 33), "group with space": rule(action=1, to_group="a b"),
        "group and peer": rule(action=1, from_group="A", from_peer=PIDS[1]),
        "to group and peer": rule(action=1, to_group="A", to_peer=PIDS[1]),
        "peer not Ed25519": rule(action=1, from_peer=b"\x12\x20" + bytes(32)),
        "peer 37 bytes": rule(action=1, to_peer=PIDS[1][:37]),
    }
    for i, r in enumerate(good_rules):
        cases.append((f"good rule {i}", sign(body(rules=[r])), at))
    cases.append(("all good rules", sign(body(rules=good_rules)), at))
    cases.append(("256 rules", sign(body(rules=[rule(action=1)] * 256)), at))
    cases.append(("257 rules", sign(body(rules=[rule(action=1)] * 257)), at))
    for name, r in bad_rules.items():
        cases.append((name, sign(body(rules=[*good_rules[:2], r])), at))
    # Admins: owner-signed certificate with the admin role, at a time, under revocation.
    a1 = admin_cert(1)
    signed_by_admin = sign(body(KEYS[1], seq=7), KEYS[1], a1)
    cases += [
        ("admin", signed_by_admin, at),
        ("admin revoked", signed_by_admin, {"now": T0, "revoked": {PIDS[1].hex(): T0 + 1}}),
        ("admin revoked before its certificate", signed_by_admin, {"now": T0, "revoked": {PIDS[1].hex(): T0}}),
        ("admin expired", signed_by_admin, {"now": T0 + 366 * DAY}),
        ("admin without the role", sign(body(KEYS[2]), KEYS[2], admin_cert(2, roles=3)), at),
        ("admin for another key", sign(body(KEYS[3]), KEYS[3], a1), at),
        ("owner with an admin attached", sign(body(), OWNER, a1), at),
    ]
    return cases


def test_go_and_python_judge_the_same_policies(go_peer_bin: Path) -> None:
    cases = policy_cases()
    vector = sign(body(rules=[pb.Rule(action=2, from_group="A", to_group="B", proto=6, port_first=22, port_last=22),
                              pb.Rule(action=1, from_peer=PIDS[1], proto=17, port_first=5000, port_last=5010)]))
    cases += [(f"mutation {i}", m, {"now": T0}) for i, m in enumerate(mutations(vector, 300, seed=17))]
    lines = [{"network": NID, "now": args["now"], "policy": data.hex(), "revoked": args.get("revoked", {})}
             for _, data, args in cases]
    go = run_tool(go_peer_bin, ["policy", "check"], lines)
    accepted = 0
    for (name, data, args), verdict in zip(cases, go, strict=True):
        revoked = {bytes.fromhex(k): v for k, v in args.get("revoked", {}).items()}
        py = python_ok(data, args["now"], revoked)
        assert verdict["ok"] == py, (name, data.hex(), verdict)
        accepted += py
    assert 10 < accepted < len(cases) - 300, accepted  # both kinds are well represented


# -- the stateful filter ------------------------------------------------------------------------------

SELF = PIDS[4]
PEERS = [PIDS[1], PIDS[2], PIDS[3]]
GROUPS = ["A", "B", "srv"]
ME4, ME6 = "100.64.0.4", "fd00::4"
THEM4 = {PIDS[1]: "100.64.0.1", PIDS[2]: "100.64.0.2", PIDS[3]: "100.64.0.3"}
THEM6 = {PIDS[1]: "fd00::1", PIDS[2]: "fd00::2", PIDS[3]: "fd00::3"}
PORTS = [22, 53, 80, 443, 7007, 40000, 40001]


def random_policy(rng: random.Random, seq: int) -> bytes:
    rules = []
    for _ in range(rng.randint(0, 6)):
        proto = rng.choice([0, 1, 6, 17])
        r: dict[str, Any] = {"action": rng.choice([1, 2]), "proto": proto}
        kind = rng.randrange(3)
        if kind == 1:
            r["from_group"] = rng.choice(GROUPS)
        elif kind == 2:
            r["from_peer"] = rng.choice(PEERS)
        kind = rng.randrange(3)
        if kind == 1:
            r["to_group"] = rng.choice(GROUPS)
        elif kind == 2:
            r["to_peer"] = rng.choice([SELF, *PEERS])
        if proto in (6, 17) and rng.random() < 0.6:
            first = rng.choice(PORTS)
            r["port_first"], r["port_last"] = first, first + rng.choice([0, 0, 100])
        rules.append(pb.Rule(**r))
    return sign(body(seq=seq, default_action=rng.choice([1, 2, 2]), rules=rules))


def random_packet(rng: random.Random, peer: bytes, inbound: bool) -> bytes:
    v6 = rng.random() < 0.3
    me, them = (ME6, THEM6[peer]) if v6 else (ME4, THEM4[peer])
    src, dst = (them, me) if inbound else (me, them)
    sport, dport = rng.choice(PORTS), rng.choice(PORTS)
    kind = rng.randrange(10)
    if kind < 3:
        return tcp(src, dst, sport, dport, rng.choice([SYN, SYN | ACK, ACK, ACK, FIN | ACK, RST]))
    if kind < 6:
        return udp(src, dst, sport, dport)
    if kind < 8:
        echo = (128, 129) if v6 else (8, 0)
        return icmp(src, dst, rng.choice(echo), ident=rng.choice([7, 8]))
    if kind == 8:  # an ICMP error quoting a packet the other side sent
        quoted = udp(dst, src, dport, sport)[:(48 if v6 else 28)]
        return icmp(src, dst, 1 if v6 else 3, ident=0, quoted=quoted)
    p = udp(src, dst, sport, dport)
    return fragment(p, 8) if not v6 else p[:rng.randrange(1, 44)]  # a non-first fragment, or cut short


def test_go_and_python_filter_the_same_packets(go_peer_bin: Path) -> None:
    rng = random.Random(1717)
    groups_of_peer = {PIDS[1]: ("A",), PIDS[2]: ("B", "srv"), PIDS[3]: ()}
    scenarios, expected = [], []
    for n in range(40):
        local_groups = tuple(sorted(rng.sample(GROUPS, rng.randint(0, 2))))
        first = random_policy(rng, 1)
        steps: list[dict[str, Any]] = [{"policy": first.hex()}]
        fw = Firewall(open_bytes(first, NID), SELF, local_groups, lambda p: groups_of_peer.get(p, ()), max_flows=64)
        verdicts: list[str | None] = [None]
        t = 0.0
        for i in range(150):
            t += rng.choice([0.0, 0.5, 1.0, 5.0, 40.0, 200.0]) if rng.random() < 0.2 else 0.01
            if i == 75:
                nxt = random_policy(rng, 2)
                steps.append({"policy": nxt.hex()})
                fw.set_policy(open_bytes(nxt, NID))
                verdicts.append(None)
                continue
            peer = rng.choice(PEERS)
            if rng.random() < 0.35:
                packet = random_packet(rng, peer, inbound=False)
                steps.append({"out": packet.hex(), "t": t})
                if fw.active:
                    fw.outbound(packet, 0, t)
                verdicts.append(None)
            else:
                packet = random_packet(rng, peer, inbound=True)
                steps.append({"in": packet.hex(), "peer": peer.hex(), "t": t})
                verdicts.append(fw.inbound(peer, packet, 0, t) if fw.active else None)
        scenarios.append({"network": NID, "self": SELF.hex(), "groups": list(local_groups),
                          "peer_groups": {p.hex(): list(g) for p, g in groups_of_peer.items()}, "max_flows": 64,
                          "steps": steps})
        expected.append((verdicts, fw.status()))
    go = run_tool(go_peer_bin, ["policy", "filter"], scenarios)
    denied = 0
    for n, ((verdicts, status), answer) in enumerate(zip(expected, go, strict=True)):
        assert "error" not in answer, answer
        got = [v or None for v in answer["verdicts"]]
        for i, (want, have) in enumerate(zip(verdicts, got, strict=True)):
            assert want == have, f"scenario {n}, step {i}: Python {want!r}, Go {have!r}: {scenarios[n]['steps'][i]}"
        for key in ("seq", "default", "rules", "rules_here", "active", "denied", "denied_by_reason", "flows",
                    "conntrack"):
            assert answer["status"][key] == status[key], (n, key, answer["status"], status)
        denied += status["denied"]
    assert denied > 100, denied  # the scenarios do deny things


# -- the DHT key (§17.4) ------------------------------------------------------------------------------


async def test_a_python_policy_travels_through_a_go_dht_to_a_go_member(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The owner stores its policy under /p2pvpn/<network ID>/policy in a Go DHT server (which validates
    it); a Go member with no tunnel to anyone reads it there, enforces it and saves it to --policy."""
    from test_go_membership import GO_SEED, PyNet, cli, go_peer_id, go_vpn

    net = PyNet(tmp_path, capsys, [])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher", "--groups", "gophers")
    text = tmp_path / "acl.toml"
    text.write_text('default = "deny"\n\n[[rule]]\naction = "allow"\nto = "group:gophers"\nproto = "icmp"\n')
    key = f"/p2pvpn/{net.nid}/policy"
    saved = tmp_path / "go-policy"
    with GoPeer(go_peer_bin, "dht", "--network", net.nid, *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as boot:
        await boot.aready()
        owner = net.cluster.node("owner", network=net.nid, bootstrap=[boot.addr()], discovery_interval=0.5)
        async with running(owner):
            node_key = f"/p2pvpn/{net.nid}/node/{owner.peer_id}"
            await boot.await_event("record_validated", lambda e: e["key"] == node_key, timeout=40)
            # Set on the running owner: it re-reads the file within a second and stores the policy at once.
            await trio.to_thread.run_sync(cli, "policy", "set", str(text), "--dir", str(tmp_path / "owner"))
            stored = await boot.await_event("record_validated", lambda e: e["key"] == key, timeout=30)
            assert stored["ok"], stored
            with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"], "--bootstrap", boot.addr(),
                        "--policy", str(saved)) as go:
                await go.aready()
                applied = await go.await_event("policy_applied", lambda e: e["via"] == "dht", timeout=40)
                assert (applied["seq"], applied["default"], applied["rules_here"], applied["active"]) == \
                    (1, "deny", 1, True), applied
                status = (await go.stats())["policy"]
                assert status["counters"]["dht_fetched"] >= 1, status
                assert saved.read_text().strip() == (tmp_path / "owner" / "membership" / "policy").read_text().strip()
