"""Roles a certificate does not grant (docs/protocol.md §15.2, §15.9.4), across implementations.

* Offline: a Python owner certifies one member with each set of roles; the member's record
  offers relay and exit. Go (``record check --owned``) and Python's validator accept every
  record (the record stays valid) and both count exactly the roles its certificate grants,
  under the record key and under both address keys.
* The Go member itself: with a certificate without the relay bit, ``vpn --relay`` refuses to
  start with a one-line error; with one that has it, Go serves the relay and its record, read
  from a Go DHT and judged by Python, offers the relay role, and no exit.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import multiaddr
import pytest
from gopeer import LOOPBACK_LISTEN, GoPeer, run_tool
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.peer.id import ID
from test_go_dht import get_value, kad_request
from test_go_membership import GO_SEED, PyNet, go_peer_id, go_vpn

from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.discovery.address import AddressValidator, address_key
from p2pvpn.host import Host
from p2pvpn.membership import cert
from p2pvpn.membership.network import roles_to_names

MEMBER = Ed25519PrivateKey.new(bytes([0x5A]) * 32)
ROLE_SETS = ["", "relay", "exit", "relay,exit", "admin", "exit,admin"]  # "": admitted without --roles


def test_go_and_python_count_only_the_roles_the_certificate_grants(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = PyNet(tmp_path, capsys, [])
    peer = ID.from_pubkey(MEMBER.get_public_key())
    now = int(time.time())
    records = rec.RecordValidator(net.nid, clock=lambda: now, revocations=dict)
    cases, expected = [], []
    for roles in ROLE_SETS:  # the same member, renewed with other roles each time
        issued = net.admit(str(peer), "m1", *(("--roles", roles) if roles else ()))
        certificate = cert.open_certificate(cert.from_text(issued["certificate"]), net.nid)
        assert sorted(roles_to_names(certificate.roles)) == sorted(filter(None, roles.split(","))), issued
        message = pb.NodeRecord(peer_id=peer.to_bytes(), network=net.nid, seq=1, expires_unix=now + 300,
                                ipv4=certificate.ipv4.packed, ipv6=certificate.ipv6.packed,
                                certificate=certificate.raw,
                                relay=pb.RelayRole(max_reservations=4, max_circuits=8),
                                exit=pb.ExitRole(allow=["0.0.0.0/0"]))
        value = rec._seal_payload(message.SerializeToString(), MEMBER)
        for key in (rec.record_key(net.nid, peer), address_key(net.nid, certificate.ipv4),
                    address_key(net.nid, certificate.ipv6)):
            cases.append((roles, key, value))
        expected.append(("relay" in roles, "exit" in roles))
    go = run_tool(go_peer_bin, ["record", "check", "--network", net.nid, "--now", str(now), "--owned"],
                  [{"key": key, "value": value.hex()} for _, key, value in cases])
    disagree = []
    for (roles, key, value), verdict in zip(cases, go, strict=True):
        if "/addr/" in key:
            opened = AddressValidator(records).open(key, value)
        else:
            opened = records.open(peer, value)
        py = (opened.relay is not None, opened.exit is not None)
        want = ("relay" in roles, "exit" in roles)
        assert verdict["ok"], (roles, key, verdict)  # §15.9.4 step 3: the record stays valid
        go_roles = (verdict["record"]["relay"] is not None, verdict["record"]["exit"] is not None)
        if not py == go_roles == want:
            disagree.append(f"certificate roles {roles or 'none'!r} under {key}: go {go_roles}, python {py}, "
                            f"spec {want}")
    assert not disagree, "roles counted differently:\n" + "\n".join(disagree)
    assert len(cases) == 3 * len(ROLE_SETS)


async def test_the_go_member_offers_the_relay_role_only_when_its_certificate_grants_it(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = PyNet(tmp_path, capsys, [])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    without = net.admit(go_id, "gopher", "--roles", "exit")
    with go_vpn(go_peer_bin, GO_SEED, net.nid, without["certificate"], "--relay") as go:
        assert go.proc.wait(timeout=30) == 1
        failed = go.wait_for("fatal", timeout=5)["error"]
        assert failed.startswith("--relay: ") and "does not grant the relay role" in failed, failed
        assert "\n" not in failed and go.find("ready") is None

    granted = net.admit(go_id, "gopher", "--roles", "relay")
    with GoPeer(go_peer_bin, "dht", "--network", net.nid, "--owned",
                *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as dht:
        await dht.aready()
        with go_vpn(go_peer_bin, GO_SEED, net.nid, granted["certificate"], "--relay",
                    "--bootstrap", dht.addr()) as go:
            ready = await go.aready()
            assert ready["relay"]["max_reservations"] > 0, ready
            published = await go.await_event("published", lambda e: e["ok"], timeout=30)
            assert published["relay"] is True, published
            key = address_key(net.nid, ipaddress.ip_address(ready["ipv4"]))
            dht_id = ID.from_base58(dht.peer_id)
            dht_addr = multiaddr.Multiaddr(dht.addr()).decapsulate(multiaddr.Multiaddr(f"/p2p/{dht_id}"))
            client = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
            async with client.running():
                served = await kad_request(client, dht_id, dht_addr, get_value(key))
            assert served is not None and served.HasField("record"), served
            records = rec.RecordValidator(net.nid, clock=lambda: int(time.time()), revocations=dict)
            opened = AddressValidator(records).open(key, served.record.value)
            assert str(opened.peer_id) == go_id
            assert opened.relay is not None and opened.relay.max_reservations > 0 and opened.exit is None, opened
