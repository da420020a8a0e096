"""Address records across implementations (docs/protocol.md §18.2): the Go peer's validator vs p2pvpn's.

* Go derives §18.2's keys of a record it seals and accepts it under them, as
  p2pvpn does; each side accepts the other's record under its address keys;
* on a corpus of valid and broken (key, value) pairs both validators give the
  same verdict, and on lists of values under one key (two members claiming
  one IPv4, as under §12.12) both select the same value. A disagreement means
  the document is ambiguous or one side is wrong; the failure names the case;
* end to end, on loopback with in-memory TUNs: two on-demand Python nodes
  whose only DHT server is the Go peer; the first packet from one to the
  other's overlay address finds it by its address record stored in Go; and
  the Go vpn peer, which stores its own address records, is found the same way;
  and the Go vpn peer (``--on-demand``) finds a Python member the same way.
"""

from __future__ import annotations

import hashlib
import ipaddress
import signal
import struct
import time
from pathlib import Path
from typing import Any

import multiaddr
import trio
from gopeer import LOOPBACK_LISTEN, GoPeer, icmp6_echo, parse_reply, run_tool
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.peer.id import ID
from test_go_dht import get_value, kad_request, put_value

from p2pvpn import addressing, identity
from p2pvpn.dataplane.packet import checksum
from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.discovery.address import AddressValidator, address_key, keys_of
from p2pvpn.host import Host
from p2pvpn.membership.store import Store
from p2pvpn.testing.cluster import Cluster, running
from p2pvpn.testing.packets import udp4, udp6

NOW = 1767225600 - 3600
NET = "lab"
SEED = {n: bytes([n]) * 32 for n in (1, 2, 3)}
KEYS = {n: Ed25519PrivateKey.new(seed) for n, seed in SEED.items()}
PEERS = {n: ID.from_pubkey(key.get_public_key()) for n, key in KEYS.items()}
ON_DEMAND = {"record_ttl": 30.0, "discovery_interval": 0.5, "on_demand": True, "idle_timeout": 30.0}


def go_check(binary: Path, network: str, now: int, cases: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    lines = [{"key": key, "value": value.hex()} for key, value in cases]
    return run_tool(binary, ["record", "check", "--network", network, "--now", str(now)], lines)


def validator(network: str = NET, now: int = NOW) -> AddressValidator:
    return AddressValidator(rec.RecordValidator(network, clock=lambda: now))


def py_verdict(key: str, value: bytes, network: str = NET, now: int = NOW) -> str | None:
    """None if p2pvpn accepts the value under the address key, else its error."""
    try:
        validator(network, now).validate(key, value)
    except rec.RecordError as exc:
        return str(exc)
    return None


def payload(key: Ed25519PrivateKey, network: str = NET, **fields: Any) -> pb.NodeRecord:
    peer_id = ID.from_pubkey(key.get_public_key()).to_bytes()
    derived = addressing.derive(peer_id, network)
    message = pb.NodeRecord(peer_id=peer_id, network=network, seq=1, expires_unix=NOW + 300,
                            ipv4=derived.ipv4.packed, ipv6=derived.ipv6.packed)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def sealed(key: Ed25519PrivateKey, network: str = NET, **fields: Any) -> bytes:
    return rec._seal_payload(payload(key, network, **fields).SerializeToString(), key)


def addresses(peer: int, network: str = NET) -> addressing.OverlayAddresses:
    return addressing.derive(PEERS[peer].to_bytes(), network)


# -- each side reads the other's records --------------------------------------


def test_go_seals_a_record_python_accepts_under_its_address_keys(go_peer_bin: Path) -> None:
    [out] = run_tool(go_peer_bin, ["record", "seal", "--seed", SEED[3].hex(), "--network", NET,
                                   "--seq", "5", "--expires", str(NOW + 300), "--addr", "/ip4/127.0.0.1/tcp/4001"])
    value = bytes.fromhex(out["value"])
    keys = keys_of(NET, rec.open_sealed(value))
    assert keys == [address_key(NET, addresses(3).ipv4), address_key(NET, addresses(3).ipv6)]
    for key in keys:
        assert py_verdict(key, value) is None
    assert [v["ok"] for v in go_check(go_peer_bin, NET, NOW, [(k, value) for k in keys])] == [True, True]


def test_go_accepts_a_python_record_under_both_address_keys_and_reads_it(go_peer_bin: Path) -> None:
    record = rec.make_record(PEERS[1], NET, seq=9, now=NOW, addrs=("/ip4/127.0.0.1/tcp/4001",))
    value = rec.seal(record, KEYS[1])
    verdicts = go_check(go_peer_bin, NET, NOW, [(k, value) for k in keys_of(NET, record)])
    assert all(v["ok"] for v in verdicts), verdicts
    assert {v["record"]["ipv4"] for v in verdicts} == {str(record.ipv4)}


# -- differential: one rule at a time ------------------------------------------


def _cases() -> dict[str, tuple[str, bytes]]:
    """name -> (key, value): a valid record, then keys and values each breaking (or not) one rule."""
    mine = addresses(1)
    v4, v6 = address_key(NET, mine.ipv4), address_key(NET, mine.ipv6)
    good = sealed(KEYS[1])
    forged = bytearray(good)
    forged[-1] ^= 1
    v4_text, v6_text = str(mine.ipv4), str(mine.ipv6)
    exploded = ipaddress.IPv6Address(mine.ipv6).exploded
    cases: dict[str, tuple[str, bytes]] = {
        "valid under its IPv4": (v4, good),
        "valid under its IPv6": (v6, good),
        "record key, not address key": (rec.record_key(NET, PEERS[1]), good),  # routed to §12.7: valid too
        "peer 2's IPv4": (address_key(NET, addresses(2).ipv4), good),
        "peer 2's IPv6": (address_key(NET, addresses(2).ipv6), good),
        "its address in another network": (address_key("default", mine.ipv4), good),
        "other network name, same address": (v4.replace(f"/{NET}/", "/lab2/"), good),
        "IPv6 exploded": (f"/p2pvpn/{NET}/addr/{exploded}", good),
        "IPv6 upper case": (f"/p2pvpn/{NET}/addr/{v6_text.upper()}", good),
        "IPv6 with zone": (v6 + "%eth0", good),
        "IPv4-mapped, dotted": (f"/p2pvpn/{NET}/addr/::ffff:{v4_text}", good),
        "IPv4 leading zero": (f"/p2pvpn/{NET}/addr/{v4_text.replace('.', '.0', 1)}", good),
        "IPv4 with prefix length": (v4 + "/32", good),
        "trailing slash": (v4 + "/", good),
        "kind ADDR": (v4.replace("/addr/", "/ADDR/"), good),
        "namespace pk": ("/pk" + v4[len("/p2pvpn"):], good),
        "no address": (f"/p2pvpn/{NET}/addr/", good),
        "hostname": (f"/p2pvpn/{NET}/addr/localhost", good),
        "key over 128 bytes": (f"/p2pvpn/{NET}/addr/" + "1" * 120, good),
        "bad signature": (v4, bytes(forged)),
        "truncated": (v4, good[:-1]),
        "empty value": (v4, b""),
        "signed by peer 2": (v4, rec._seal_payload(payload(KEYS[1]).SerializeToString(), KEYS[2])),
        "peer 2's own record under peer 1's key": (v4, sealed(KEYS[2])),
        "expired": (v4, sealed(KEYS[1], expires_unix=NOW)),
        "expires in a day": (v4, sealed(KEYS[1], expires_unix=NOW + 86400)),
        "expires in a day and a second": (v4, sealed(KEYS[1], expires_unix=NOW + 86401)),
        "record of another network": (v4, sealed(KEYS[1], network="lab2")),
        "claims peer 2's IPv4 (under it)": (address_key(NET, addresses(2).ipv4),
                                            sealed(KEYS[1], ipv4=addresses(2).ipv4.packed)),
        "claims peer 2's IPv6 (under it)": (address_key(NET, addresses(2).ipv6),
                                            sealed(KEYS[1], ipv6=addresses(2).ipv6.packed)),
        "address_index 3 under its candidate-3 IPv4": (
            address_key(NET, addressing.derive(PEERS[1].to_bytes(), NET, 3).ipv4),
            sealed(KEYS[1], address_index=3, ipv4=addressing.derive(PEERS[1].to_bytes(), NET, 3).ipv4.packed)),
        "candidate-3 IPv4 key, record at index 0": (
            address_key(NET, addressing.derive(PEERS[1].to_bytes(), NET, 3).ipv4), good),
        "envelope with trailing garbage": (v4, good + b"\x00"),
    }
    return cases


def test_go_and_python_agree_case_by_case(go_peer_bin: Path) -> None:
    cases = _cases()
    names = list(cases)
    go = go_check(go_peer_bin, NET, NOW, [cases[n] for n in names])
    disagree = []
    for name, verdict in zip(names, go, strict=True):
        key, value = cases[name]
        py = py_verdict(key, value) if key.split("/")[3:4] == ["addr"] else _py_node_verdict(key, value)
        if verdict["ok"] != (py is None):
            disagree.append(f"{name}: go {'accepts' if verdict['ok'] else 'rejects: ' + verdict['error']}; "
                            f"python {'accepts' if py is None else 'rejects: ' + py}")
    assert not disagree, "Go and Python validators disagree:\n" + "\n".join(disagree)
    accepted = {n for n, v in zip(names, go, strict=True) if v["ok"]}
    assert accepted == {"valid under its IPv4", "valid under its IPv6", "record key, not address key",
                        "expires in a day", "address_index 3 under its candidate-3 IPv4"}, accepted
    # The reader's network is part of the rule: a "default" reader refuses the "lab" keys.
    other = go_check(go_peer_bin, "default", NOW, [cases["valid under its IPv4"]])
    assert not other[0]["ok"] and py_verdict(*cases["valid under its IPv4"], network="default") is not None


def _py_node_verdict(key: str, value: bytes) -> str | None:
    try:
        rec.RecordValidator(NET, clock=lambda: NOW).validate(key, value)
    except rec.RecordError as exc:
        return str(exc)
    return None


# -- selection: two members claiming one IPv4 -----------------------------------


def colliding_keys(network: str, limit: int = 50000) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """Two identities whose first IPv4 candidate is the same address (22 bits: found within a few thousand)."""
    seen: dict[ipaddress.IPv4Address, Ed25519PrivateKey] = {}
    for i in range(limit):
        key = Ed25519PrivateKey.new(hashlib.sha256(b"collide" + i.to_bytes(4, "big")).digest())
        address, used = addressing.derive_ipv4(ID.from_pubkey(key.get_public_key()).to_bytes(), network, 0)
        if used != 0:
            continue
        if address in seen:
            return seen[address], key
        seen[address] = key
    raise AssertionError(f"no IPv4 collision among {limit} keys")


def test_go_and_python_select_the_same_value(go_peer_bin: Path) -> None:
    a, b = colliding_keys(NET)
    small, large = sorted((a, b), key=lambda k: ID.from_pubkey(k.get_public_key()).to_bytes())
    key = address_key(NET, addressing.derive(ID.from_pubkey(small.get_public_key()).to_bytes(), NET).ipv4)
    s_old, s_new = sealed(small, seq=1, expires_unix=NOW + 100), sealed(small, seq=2, expires_unix=NOW + 50)
    s_later = sealed(small, seq=2, expires_unix=NOW + 60)
    s_tie = sealed(small, seq=2, expires_unix=NOW + 60, addrs=[b"\x04\xc0\x00\x02\x01\x06\x0f\xa1"])
    l_new, s_expired = sealed(large, seq=99, expires_unix=NOW + 300), sealed(small, seq=100, expires_unix=NOW)
    lists = [[l_new, s_old], [s_old, l_new], [l_new, s_old, s_new], [s_new, s_later], [s_later, s_tie],
             [s_tie, s_later], [s_new, s_new], [s_expired, l_new], [s_expired], [l_new]]
    go = run_tool(go_peer_bin, ["record", "select", "--network", NET, "--now", str(NOW)],
                  [{"key": key, "values": [v.hex() for v in values]} for values in lists])
    v = validator()
    for values, answer in zip(lists, go, strict=True):
        try:
            expected = v.select(key, values)
        except rec.RecordError:
            expected = -1
        assert answer["index"] == expected, ([lists.index(values)], answer, expected)
    assert [g["index"] for g in go[:3]] == [1, 0, 2]  # the smaller peer ID wins over a higher seq


# -- end to end: on-demand Python nodes whose only DHT server is the Go peer ----


async def test_on_demand_nodes_find_each_other_by_address_through_the_go_dht(go_dht: GoPeer, tmp_path: Path) -> None:
    """b publishes its address records into the Go DHT; a's first packet to b's address finds b there.

    Both Python nodes are DHT clients, so the Go peer is the only DHT server:
    every record is stored there and every lookup is answered from there. In a
    network without owner the record opens a tunnel only to a listed peer (§18.2).
    """
    cluster = Cluster(tmp_path)
    cluster.node("a")
    cluster.node("b")  # keys first, to list each other
    settings = {**ON_DEMAND, "bootstrap": [go_dht.addr()], "dht": "client"}
    a = cluster.node("a", allow_peers=(str(cluster.nodes["b"].peer_id),), **settings)
    b = cluster.node("b", allow_peers=(str(a.peer_id),), **settings)
    b_keys = [address_key("default", b.addresses.ipv4), address_key("default", b.addresses.ipv6)]
    async with running(a, b):
        for key in b_keys:  # the Go validator accepted b's address records (§18.2), so it stores them
            await go_dht.await_event("record_validated", lambda e, k=key: e["key"] == k and e["ok"], timeout=30)
        assert a.manager is not None and b.peer_id not in {p for p, peer in a.manager.peers.items()
                                                             if peer.tunnel is not None}
        # a's only DHT server is Go: the lookup below can be answered nowhere else.
        assert a.discovery is not None
        assert [str(p) for p in a.discovery.dht.kad.routing_table.get_peer_ids()] == [go_dht.peer_id]
        assert a.discovery.dht.kad.value_store.get(b_keys[0].encode()) is None
        packet = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"found through go")
        started = trio.current_time()
        cluster.tuns["a"].inject(packet)
        with trio.fail_after(20):
            assert await cluster.tuns["b"].delivered.receive() == packet
        print(f"first packet to delivery through the Go DHT: {trio.current_time() - started:.2f} s")
        assert a.discovery is not None and a.discovery.address_lookups["found"] >= 1
        assert a.manager.peers[b.peer_id].learned_from == "lookup"
        back = udp4(str(b.addresses.ipv4), str(a.addresses.ipv4), b"and back")
        cluster.tuns["b"].inject(back)
        with trio.fail_after(10):
            assert await cluster.tuns["a"].delivered.receive() == back

        # The Go DHT refuses b's record under a's address key, and keeps serving b's own under b's.
        go_id = ID.from_base58(go_dht.peer_id)
        go_addr = multiaddr.Multiaddr(go_dht.addr()).decapsulate(multiaddr.Multiaddr(f"/p2p/{go_id}"))
        client = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
        async with client.running():
            served = await kad_request(client, go_id, go_addr, get_value(b_keys[0]))
            assert served is not None and served.HasField("record")
            assert validator("default", int(time.time())).open(b_keys[0], served.record.value).peer_id == b.peer_id
            stolen = address_key("default", a.addresses.ipv4)
            mark = go_dht.mark()
            await kad_request(client, go_id, go_addr, put_value(stolen, served.record.value))
            refused = await go_dht.await_event("record_validated", lambda e: e["key"] == stolen, start=mark)
            assert not refused["ok"] and "claims" in refused["error"], refused
            kept = await kad_request(client, go_id, go_addr, get_value(stolen))
            if kept is not None and kept.HasField("record"):  # a's own, if a stored it there
                assert rec.open_sealed(kept.record.value).peer_id == a.peer_id


async def test_an_on_demand_python_node_reaches_the_go_vpn_peer_by_its_address_record(
    go_dht: GoPeer, go_peer_bin: Path, tmp_path: Path
) -> None:
    """The Go vpn peer stores its record under its two address keys (§18.2); a packet to either finds it."""
    with GoPeer(go_peer_bin, "vpn", "--bootstrap", go_dht.addr(), "--keepalive", "1s", "--record-ttl", "10s",
                "--udp-echo-port", "7", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
        ready = await go.aready()
        go_keys = [address_key("default", ipaddress.ip_address(ready[k])) for k in ("ipv4", "ipv6")]
        published = await go.await_event("published", lambda e: e["ok"], timeout=30)
        assert "put_error" not in published
        for key in go_keys:
            await go_dht.await_event("record_validated", lambda e, k=key: e["key"] == k and e["ok"], timeout=30)
        cluster = Cluster(tmp_path)
        py = cluster.node("py", allow_peers=(go.peer_id,), bootstrap=[go_dht.addr()], dht="client", **ON_DEMAND)
        async with running(py):
            await trio.sleep(1.0)  # several discovery rounds: on demand, nothing dials the Go peer yet
            go_id = ID.from_base58(go.peer_id)
            assert py.manager is not None and go_id not in py.manager.peers
            tun = cluster.tuns["py"]
            me6 = str(py.addresses.ipv6)
            tun.inject(icmp6_echo(me6, ready["ipv6"], ident=0x66, seq=1))
            with trio.fail_after(20):
                reply = parse_reply(await tun.delivered.receive())
            assert (reply["type"], reply["src"], reply["seq"]) == (129, ready["ipv6"], 1)
            assert py.manager.peers[go_id].learned_from == "lookup"
            assert py.discovery is not None and py.discovery.address_lookups["found"] == 1
            await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id))


# -- a network with an owner: the certificate decides the addresses (§15.9.4) ---


def test_go_and_python_agree_on_address_records_of_an_owned_network(go_peer_bin: Path, tmp_path: Path) -> None:
    """Records with certificates, without, with another member's, with addresses the certificate does not give."""
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2"])
    opened = {n: Store(tmp_path / n).certificate() for n in ("n1", "n2")}
    c1, c2 = opened["n1"], opened["n2"]
    assert c1 is not None and c2 is not None
    certs = {"n1": c1.raw, "n2": c2.raw}
    keys = {n: identity.load(tmp_path / n / identity.KEY_FILE) for n in ("n1", "n2")}
    now = int(time.time())
    peer1 = ID.from_pubkey(keys["n1"].public_key)

    def owned(certificate: bytes, ipv4: ipaddress.IPv4Address = c1.ipv4,
              ipv6: ipaddress.IPv6Address = c1.ipv6, signer: str = "n1") -> bytes:
        message = pb.NodeRecord(peer_id=peer1.to_bytes(), network=nid, seq=1, expires_unix=now + 300,
                                ipv4=ipv4.packed, ipv6=ipv6.packed, certificate=certificate)
        return rec._seal_payload(message.SerializeToString(), keys[signer].private_key)

    k4, k6 = address_key(nid, c1.ipv4), address_key(nid, c1.ipv6)
    other4 = addressing.derive(peer1.to_bytes(), nid, 1).ipv4  # a valid derivation, but not the certificate's
    assert other4 != c1.ipv4
    cases = {
        "with its certificate, IPv4 key": (k4, owned(certs["n1"])),
        "with its certificate, IPv6 key": (k6, owned(certs["n1"])),
        "with its certificate, record key": (rec.record_key(nid, peer1), owned(certs["n1"])),
        "under the other member's key": (address_key(nid, c2.ipv4), owned(certs["n1"])),
        "no certificate": (k4, owned(b"")),
        "the other member's certificate": (k4, owned(certs["n2"])),
        "an IPv4 its certificate does not give": (address_key(nid, other4), owned(certs["n1"], other4)),
        "claims the other member's IPv4": (address_key(nid, c2.ipv4), owned(certs["n1"], c2.ipv4)),
        "certificate bit flipped": (k4, owned(certs["n1"][:-1] + bytes([certs["n1"][-1] ^ 1]))),
    }
    names = list(cases)
    go = run_tool(go_peer_bin, ["record", "check", "--network", nid, "--now", str(now), "--owned"],
                  [{"key": cases[n][0], "value": cases[n][1].hex()} for n in names])
    records = rec.RecordValidator(nid, clock=lambda: now, revocations=dict)
    disagree, accepted = [], set()
    for name, verdict in zip(names, go, strict=True):
        key, value = cases[name]
        try:
            (AddressValidator(records).validate if "/addr/" in key else records.validate)(key, value)
            py = None
        except rec.RecordError as exc:
            py = str(exc)
        if verdict["ok"] != (py is None):
            disagree.append(f"{name}: go {verdict.get('error', 'accepts')}; python {py or 'accepts'}")
        if verdict["ok"]:
            accepted.add(name)
    assert not disagree, "Go and Python validators disagree:\n" + "\n".join(disagree)
    assert accepted == set(names[:3]), accepted
    # The admission gave n1 its derived addresses, so a reader that ignores owners would take the
    # record without a certificate: only the owned reader (--owned) refuses it.
    [plain] = go_check(go_peer_bin, nid, now, [cases["no certificate"]])
    assert plain["ok"]


async def test_owned_network_on_demand_members_meet_through_an_owned_go_dht(go_peer_bin: Path, tmp_path: Path) -> None:
    """The same first-packet lookup in a network with an owner; the Go DHT (`--owned`) checks certificates."""
    cluster = Cluster(tmp_path)
    nid = cluster.owned("n0", ["n1", "n2"])
    with GoPeer(go_peer_bin, "dht", "--network", nid, "--owned", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as dht:
        await dht.aready()
        settings = {**ON_DEMAND, "bootstrap": [dht.addr()], "dht": "client", "network": nid}
        n1, n2 = cluster.node("n1", **settings), cluster.node("n2", **settings)
        async with running(n1, n2):
            for key in (address_key(nid, n2.addresses.ipv4), address_key(nid, n2.addresses.ipv6),
                        rec.record_key(nid, n2.peer_id)):
                await dht.await_event("record_validated", lambda e, k=key: e["key"] == k and e["ok"], timeout=30)
            assert n1.discovery is not None
            assert [str(p) for p in n1.discovery.dht.kad.routing_table.get_peer_ids()] == [dht.peer_id]
            packet = udp6(str(n1.addresses.ipv6), str(n2.addresses.ipv6), b"owned, through go")
            cluster.tuns["n1"].inject(packet)
            with trio.fail_after(20):
                assert await cluster.tuns["n2"].delivered.receive() == packet
            assert n1.manager is not None and n1.manager.peers[n2.peer_id].learned_from == "lookup"


# -- the Go vpn peer dials on demand -------------------------------------------


def echo_reply4(request: bytes) -> bytes:
    """The ICMP echo reply a host sends to an IPv4 echo request (addresses swapped, same ident, seq, data)."""
    assert request[9] == 1 and request[20] == 8, request.hex()
    icmp = b"\x00\x00\x00\x00" + request[24:]
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = bytearray(request[:20])
    header[12:16], header[16:20], header[10:12] = request[16:20], request[12:16], b"\x00\x00"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + icmp


async def test_the_go_vpn_peer_finds_a_python_member_by_its_address_record_and_dials_it(
    go_dht: GoPeer, go_peer_bin: Path, tmp_path: Path
) -> None:
    """Go (`--on-demand`) has no tunnel to the Python node; its own pings to the node's IPv4 start a lookup (§18.3)."""
    cluster = Cluster(tmp_path)
    first = cluster.node("py")  # its key, for --allow
    with GoPeer(go_peer_bin, "vpn", "--bootstrap", go_dht.addr(), "--keepalive", "1s", "--record-ttl", "10s",
                "--on-demand", "--allow", str(first.peer_id), "--traffic-to", str(first.addresses.ipv4),
                "--traffic-path", "any", "--traffic-pings", "3", "--traffic-bytes", "0", "--traffic-on-usr2",
                *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
        ready = await go.aready()
        py = cluster.node("py", allow_peers=(go.peer_id,), bootstrap=[go_dht.addr()], dht="client", **ON_DEMAND)
        async with running(py):
            key = address_key("default", py.addresses.ipv4)
            await go_dht.await_event("record_validated", lambda e: e["key"] == key and e["ok"], timeout=30)
            assert py.manager is not None and ID.from_base58(go.peer_id) not in py.manager.peers
            go.proc.send_signal(signal.SIGUSR2)  # one round of Go's own traffic
            resolved = await go.await_event("demand_resolved", timeout=30)
            assert resolved["peer"] == str(py.peer_id) and resolved["addrs"] >= 1, resolved
            tun = cluster.tuns["py"]
            for _ in range(3):
                with trio.fail_after(15):
                    request = await tun.delivered.receive()
                assert (str(ipaddress.IPv4Address(request[12:16])), request[20]) == (ready["ipv4"], 8)
                tun.inject(echo_reply4(request))
            done = await go.await_event("traffic_done", timeout=30)
            assert done["looked_up"] is True and done["pings_answered"] == 3, done
            await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id))
            peer = py.manager.peers[ID.from_base58(go.peer_id)]
            assert peer.tunnel is not None
