"""Networks with an owner across implementations: the Go peer (interop/go-peer, written from
docs/protocol.md §15 alone) and Python nodes judge each other's certificates and revocations.

First, offline: Go and Python give the same verdict on several hundred certificates and lists,
most of them validly signed but off the rules in one way (canonical form, field limits, chains,
time, revocation), plus random mutations of the §15.10 vectors.

Both directions, on real libp2p connections on loopback (Python nodes with in-memory TUNs):

* A Python-owned network: the owner admits the Go peer (``p2pvpn admit``); the Go member gets a
  tunnel with a Python member and answers its pings. A Go peer presenting a forged, expired or
  revoked certificate is refused with NOT_AUTHORIZED. A revocation the Python owner signs reaches
  the Go peer by push, and the Go peer cuts the revoked Python member off and refuses it after.
* A Go-owned network: Go issues the certificates (owner-signed, and admin-signed by the Go node's
  own key); ``p2pvpn join`` accepts them and Python nodes run on them. A revocation list the Go
  admin signs is enforced by the Go node, pushed to the Python members, and enforced there too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
from gopeer import LOOPBACK_LISTEN, GoPeer, icmp4_echo, mutations, parse_reply, run_tool, transport_checksum_ok
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.cli import app
from p2pvpn.cli_membership import create_network
from p2pvpn.membership import cert, revocation
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import Signer, network_id, peer_id_bytes, signer_from_seed
from p2pvpn.membership.store import Store
from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running, wait_up

GO_SEED = "47" * 32
OWNER_SEED = "0f" * 32
ADMIN_SEED = "a1" * 32
DAY = 86400


def cli(*args: str) -> None:
    app(list(args), standalone_mode=False)


def go_peer_id(binary: Path, seed: str) -> str:
    return str(run_tool(binary, ["membership", "id", "--seed", seed])[0]["peer_id"])


def go_vpn(binary: Path, seed: str, nid: str, certificate: str, *extra: str) -> GoPeer:
    """A Go member; without a DHT unless ``extra`` names a --bootstrap."""
    dht = () if any(a == "--bootstrap" for a in extra) else ("--dht", "off")
    return GoPeer(binary, "vpn", "--seed", seed, "--network", nid, "--cert", certificate, *dht,
                  "--keepalive", "1s", *extra, *(f"--listen={a}" for a in LOOPBACK_LISTEN))


def tunnel_to(node: Node, peer_id: ID) -> bool:
    p = node.manager.peers.get(peer_id) if node.manager else None
    return p is not None and p.tunnel is not None


async def ping_go(node: Node, tun: object, go: GoPeer, seq: int) -> None:
    """An ICMP echo from the node's TUN to the Go peer's certificate address, answered by Go."""
    me4, go4 = str(node.addresses.ipv4), go.ready()["ipv4"]
    tun.inject(icmp4_echo(me4, go4, ident=0x4D, seq=seq))  # type: ignore[attr-defined]
    with trio.fail_after(10):
        reply = await tun.delivered.receive()  # type: ignore[attr-defined]
    assert transport_checksum_ok(reply)
    r = parse_reply(reply)
    assert (r["type"], r["src"], r["dst"], r["seq"]) == (0, go4, me4, seq)


# -- the same verdicts, offline -----------------------------------------------------------------------------

T0 = 1767225600
OWNER = signer_from_seed(bytes([0x10]) * 32)
NID = network_id(OWNER.public_key)
KEYS = {n: signer_from_seed(bytes([n]) * 32) for n in (1, 2, 3)}
PIDS = {n: peer_id_bytes(k.public_key) for n, k in KEYS.items()}


def uv(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            return bytes(out + bytes([n]))
        out.append(n & 0x7F | 0x80)
        n >>= 7


def ld(num: int, payload: bytes) -> bytes:
    return uv(num << 3 | 2) + uv(len(payload)) + payload


def body(n: int = 1, **changes: object) -> pb.Certificate:
    a = addressing.derive(PIDS[n], NID)
    fields: dict[str, object] = dict(network_id=NID, peer_id=PIDS[n], name=f"peer{n}", ipv4=a.ipv4.packed,
                                     ipv6=a.ipv6.packed, roles=0, groups=[], not_before=T0, not_after=T0 + 7 * DAY,
                                     issuer=OWNER.public_key)
    fields.update(changes)
    return pb.Certificate(**fields)  # type: ignore[arg-type]


def sign_raw(raw_body: bytes, signer: Signer = OWNER, issuer_cert: bytes | None = None,
             context: bytes = cert.CERT_CONTEXT) -> bytes:
    """A SignedCertificate around any body bytes, validly signed: only the rules can refuse it."""
    out = ld(1, raw_body) + ld(2, signer.sign(context + raw_body))
    return out + (ld(3, issuer_cert) if issuer_cert is not None else b"")


def certificate_cases() -> list[tuple[str, bytes, dict]]:
    """(name, SignedCertificate bytes, check arguments) in many shapes, most validly signed."""
    enc = lambda m: m.SerializeToString(deterministic=True)  # noqa: E731
    at = {"now": T0}
    admin_body = body(1, roles=5, not_after=T0 + 365 * DAY)
    admin = sign_raw(enc(admin_body))
    member_of_admin = lambda **c: enc(body(2, issuer=KEYS[1].public_key, **c))  # noqa: E731
    cases: list[tuple[str, bytes, dict]] = [
        ("valid", sign_raw(enc(body())), at),
        ("valid, admin-signed", sign_raw(member_of_admin(), KEYS[1], admin), at),
        ("valid, all roles and 16 groups", sign_raw(enc(body(roles=7, groups=sorted(f"g{i:02}" for i in range(16))))), at),
        ("17 groups", sign_raw(enc(body(groups=sorted(f"g{i:02}" for i in range(17))))), at),
        ("groups unsorted", sign_raw(enc(body(groups=["b", "a"]))), at),
        ("groups duplicate", sign_raw(enc(body(groups=["a", "a"]))), at),
        ("group of 32", sign_raw(enc(body(groups=["x" * 32]))), at),
        ("group of 33", sign_raw(enc(body(groups=["x" * 33]))), at),
        ("group with a space", sign_raw(enc(body(groups=["a b"]))), at),
        ("name of 63", sign_raw(enc(body(name="a" * 63))), at),
        ("name of 64", sign_raw(enc(body(name="a" * 64))), at),
        ("name with a leading hyphen", sign_raw(enc(body(name="-a"))), at),
        ("name upper-case", sign_raw(enc(body(name="Alpha"))), at),
        ("name empty", sign_raw(enc(body(name=""))), at),
        ("unknown role bits", sign_raw(enc(body(roles=0xFFFFFFF8 | 1))), at),
        ("ipv4 100.64.0.0", sign_raw(enc(body(ipv4=bytes([100, 64, 0, 0])))), at),
        ("ipv4 100.127.255.255", sign_raw(enc(body(ipv4=bytes([100, 127, 255, 255])))), at),
        ("ipv4 100.64.0.1", sign_raw(enc(body(ipv4=bytes([100, 64, 0, 1])))), at),
        ("ipv4 100.128.0.1", sign_raw(enc(body(ipv4=bytes([100, 128, 0, 1])))), at),
        ("ipv4 of 5 bytes", sign_raw(enc(body(ipv4=bytes([100, 64, 0, 1, 0])))), at),
        ("ipv6 outside the /64", sign_raw(enc(body(ipv6=bytes.fromhex("fd00" + "00" * 13 + "01")))), at),
        ("ipv6 zero IID", sign_raw(enc(body(ipv6=body().ipv6[:8] + bytes(8)))), at),
        ("not_before 0", sign_raw(enc(body(not_before=0, not_after=100))), {"now": 50}),
        ("lifetime MAX", sign_raw(enc(body(not_after=T0 + 400 * DAY))), at),
        ("lifetime MAX + 1", sign_raw(enc(body(not_after=T0 + 400 * DAY + 1))), at),
        ("not_after == not_before", sign_raw(enc(body(not_after=T0))), at),
        ("issuer of 31 bytes", sign_raw(enc(body(issuer=OWNER.public_key[:31]))), at),
        ("peer_id not Ed25519", sign_raw(enc(body(peer_id=b"\x12\x20" + bytes(32)))), at),
        ("other network", sign_raw(enc(body(network_id="a" * 32))), at),
        ("network_id upper-case", sign_raw(enc(body(network_id=NID.upper()))), at),
        ("signed by a stranger", sign_raw(enc(body(issuer=KEYS[3].public_key)), KEYS[3]), at),
        ("signature over the list context", sign_raw(enc(body()), context=revocation.REVOCATION_CONTEXT), at),
        ("admin without the admin bit", sign_raw(member_of_admin(), KEYS[1], sign_raw(enc(body(1, roles=1)))), at),
        ("admin for another key", sign_raw(enc(body(2, issuer=KEYS[3].public_key)), KEYS[3], admin), at),
        ("chain of three", sign_raw(enc(body(3, issuer=KEYS[2].public_key)), KEYS[2],
                                    sign_raw(member_of_admin(roles=4), KEYS[1], admin)), at),
        ("empty issuer_certificate", sign_raw(enc(body()), issuer_cert=b""), at),
        ("owner-signed with an admin attached", sign_raw(enc(body()), issuer_cert=admin), at),
        ("unknown field", sign_raw(enc(body()) + bytes([0x78, 0x01])), at),
        ("name twice", sign_raw(enc(body()) + ld(3, b"other")), at),
        ("fields out of order", sign_raw(ld(3, b"peer1") + enc(body(name=""))), at),
        ("explicit empty name", sign_raw(ld(3, b"") + enc(body(name=""))), at),
        ("roles non-minimal", sign_raw(enc(body(roles=0)).replace(b"\x40", b"\x30\x85\x00\x40", 1)), at),
        ("roles above 2^32", sign_raw(enc(body(roles=0)).replace(b"\x40", b"\x30" + uv(2**32 + 1) + b"\x40", 1)), at),
        ("name as a varint", sign_raw(enc(body()) + bytes([0x18, 0x01])), at),
        ("name invalid UTF-8", sign_raw(enc(body(name="")).replace(b"\x22\x04", b"\x1a\x01\xff\x22\x04", 1)), at),
    ]
    valid = sign_raw(enc(body()))
    nb, na = T0, T0 + 7 * DAY
    cases += [
        ("time: not_before - 301", valid, {"now": nb - 301}), ("time: not_before - 300", valid, {"now": nb - 300}),
        ("time: not_after + 299", valid, {"now": na + 299}), ("time: not_after + 300", valid, {"now": na + 300}),
        ("revoked at not_before", valid, {"now": T0, "revoked": {PIDS[1]: nb}}),
        ("revoked at not_before + 1", valid, {"now": T0, "revoked": {PIDS[1]: nb + 1}}),
        ("its admin revoked", sign_raw(member_of_admin(), KEYS[1], admin), {"now": T0, "revoked": {PIDS[1]: T0 + 1}}),
        ("its admin expired", sign_raw(member_of_admin(), KEYS[1], sign_raw(enc(body(1, roles=4, not_after=T0 + DAY)))),
         {"now": T0 + 2 * DAY}),
        ("held by another peer", valid, {"now": T0, "peer": PIDS[2]}),
        ("held by its peer", valid, {"now": T0, "peer": PIDS[1]}),
        ("over 4096 bytes, with an unknown field", sign_raw(enc(body(groups=[f"{i:03}" + "x" * 28 for i in range(16)])) + ld(15, bytes(3600))), at),
    ]
    return cases


def list_cases() -> list[tuple[str, bytes, dict]]:
    enc = lambda m: m.SerializeToString(deterministic=True)  # noqa: E731
    admin = sign_raw(enc(body(1, roles=4, not_after=T0 + 365 * DAY)))

    def lst(entries: list[tuple[bytes, int]], signer: Signer = OWNER, issuer_cert: bytes | None = None,
            seq: int = 1, network: str = NID, extra: bytes = b"") -> bytes:
        b = enc(pb.RevocationList(network_id=network, seq=seq, issuer=signer.public_key,
                                  revocations=[pb.Revocation(peer_id=p, not_before=t) for p, t in entries])) + extra
        return sign_raw(b, signer, issuer_cert, context=revocation.REVOCATION_CONTEXT)

    one = [(PIDS[3], T0 + DAY)]
    ordered = sorted([(PIDS[1], T0), (PIDS[2], T0), (PIDS[3], T0)])
    at = {"now": T0}
    return [
        ("valid", lst(one), at), ("valid, empty, seq 0", lst([], seq=0), at), ("valid, three", lst(ordered), at),
        ("unsorted", lst(ordered[::-1]), at), ("duplicate", lst([ordered[0], ordered[0]]), at),
        ("not_before 0", lst([(PIDS[3], 0)]), at), ("peer_id not Ed25519", lst([(b"\x00\x01", 5)]), at),
        ("other network", lst(one, network="b" * 32), at), ("signed by a stranger", lst(one, KEYS[3]), at),
        ("admin-signed", lst(one, KEYS[1], admin), at),
        ("admin-signed, admin revoked", lst(one, KEYS[1], admin), {"now": T0, "revoked": {PIDS[1]: T0 + 1}}),
        ("admin-signed, admin expired", lst(one, KEYS[1], admin), {"now": T0 + 366 * DAY}),
        ("signed by a member", lst(one, KEYS[2], sign_raw(enc(body(2, roles=3)))), at),
        ("unknown field", lst(one, extra=bytes([0x78, 0x01])), at),
        ("certificate context", sign_raw(enc(pb.RevocationList(network_id=NID, seq=1, issuer=OWNER.public_key)),
                                         context=cert.CERT_CONTEXT), at),
        ("1025 entries", lst(sorted((peer_id_bytes(i.to_bytes(32, "big")), 1) for i in range(1025))), at),
    ]


def python_verdict(kind: str, data: bytes, args: dict) -> bool:
    try:
        if kind == "cert":
            cert.verify(data, NID, args["now"], args.get("revoked", {}), args.get("peer"))
        else:
            revocation.open_list(data, NID, args["now"], args.get("revoked", {}))
    except MembershipError:
        return False
    return True


def test_go_and_python_give_the_same_verdicts(go_peer_bin: Path) -> None:
    doc_b = cert.from_text(cert.to_text(bytes.fromhex(_section_hex("Certificate B"))))
    doc_l = bytes.fromhex(_section_hex("Revocation list L"))
    cases = [("cert", name, data, args) for name, data, args in certificate_cases()]
    cases += [("list", name, data, args) for name, data, args in list_cases()]
    cases += [("cert", f"B mutation {i}", d, {"now": T0}) for i, d in enumerate(mutations(doc_b, 300, 1))]
    cases += [("list", f"L mutation {i}", d, {"now": T0}) for i, d in enumerate(mutations(doc_l, 150, 2))]
    body_b = pb.SignedCertificate.FromString(doc_b).certificate
    issuer_a = pb.SignedCertificate.FromString(doc_b).issuer_certificate.SerializeToString(deterministic=True)
    cases += [("cert", f"re-signed B body mutation {i}", sign_raw(d, KEYS[1], issuer_a), {"now": T0})
              for i, d in enumerate(mutations(body_b, 300, 3))]
    lines = []
    for kind, _name, data, args in cases:
        line: dict = {"network": NID, "now": args["now"], kind: data.hex()}
        if "peer" in args:
            line["peer"] = ID(args["peer"]).to_base58()
        if "revoked" in args:
            line["revoked"] = {ID(p).to_base58(): t for p, t in args["revoked"].items()}
        lines.append(line)
    answers = run_tool(go_peer_bin, ["membership", "check"], lines)
    assert len(answers) == len(cases)
    verdicts = {name: (python_verdict(kind, data, args), answer["ok"], answer.get("error"))
                for (kind, name, data, args), answer in zip(cases, answers, strict=True)}
    differ = {name: v for name, v in verdicts.items() if v[0] != v[1]}
    assert not differ, differ
    accepted = {name for name, (py, _go, _e) in verdicts.items() if py}
    assert {"valid", "valid, admin-signed", "valid, all roles and 16 groups", "group of 32", "name of 63",
            "unknown role bits", "ipv4 100.64.0.1", "lifetime MAX", "time: not_before - 300", "time: not_after + 299",
            "revoked at not_before", "held by its peer", "valid, empty, seq 0", "valid, three",
            "admin-signed"} <= accepted
    refused = set(verdicts) - accepted
    assert len(refused) > 700 and {"unknown field", "name twice", "fields out of order", "roles non-minimal",
                                    "roles above 2^32", "chain of three", "signature over the list context",
                                    "its admin revoked", "admin-signed, admin revoked", "unsorted"} <= refused


def _section_hex(title: str) -> str:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    m = re.search(rf"^{re.escape(title)}, \d+ bytes:\n\n```\n([0-9a-f\n]+)```", doc, flags=re.MULTILINE)
    assert m, title
    return m.group(1).replace("\n", "")


# -- a network owned by Python ---------------------------------------------------------------------------


class PyNet:
    """A Python owner directory, members made from it, and certificates for the Go peer."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], names: list[str]) -> None:
        self.tmp, self.capsys = tmp_path, capsys
        self.cluster = Cluster(tmp_path)
        for name in ["owner", *names]:
            self.cluster.node(name)  # keys first
        self.nid, _ = create_network(tmp_path / "owner", "lab")
        for name in names:
            pid = str(self.cluster.nodes[name].peer_id)
            cli("join", self.admit(pid, name)["certificate"], "--dir", str(tmp_path / name))
        capsys.readouterr()

    def admit(self, peer_id: str, name: str, *extra: str) -> dict:
        self.capsys.readouterr()
        cli("admit", peer_id, "--dir", str(self.tmp / "owner"), "--name", name, "--json", *extra)
        return json.loads(self.capsys.readouterr().out)

    def node(self, name: str, peers: list[str] = ()) -> Node:  # type: ignore[assignment]
        return self.cluster.node(name, list(peers), network=self.nid)


async def test_a_go_member_with_a_python_certificate_gets_a_tunnel_and_answers(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = PyNet(tmp_path, capsys, ["m1"])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher")
    m1 = net.node("m1")  # m1 lists no one: the Go peer gets in by its certificate alone
    async with running(m1):
        with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"], "--peer", net.cluster.addr("m1")) as go:
            ready = await go.aready()
            assert (ready["ipv4"], ready["ipv6"]) == (issued["ipv4"], issued["ipv6"])  # the certificate decides
            accepted = await go.await_event("certificate_accepted", lambda e: e["peer"] == str(m1.peer_id))
            own = m1.membership.own  # type: ignore[union-attr]
            assert (accepted["name"], accepted["ipv4"], accepted["ipv6"]) == ("m1", str(own.ipv4), str(own.ipv6))
            await go.await_event("tunnel_up", lambda e: e["peer"] == str(m1.peer_id))
            await wait_up_id(m1, ID.from_base58(go_id))
            seen = m1.membership.presented[ID.from_base58(go_id).to_bytes()]  # type: ignore[union-attr]
            assert (seen.name, str(seen.ipv4)) == ("gopher", issued["ipv4"])
            await ping_go(m1, net.cluster.tuns["m1"], go, seq=1)
            counters = (await go.stats())["counters"]
            assert not counters.get("spoofed_source") and not counters.get("certificate_refused")


async def wait_up_id(node: Node, peer_id: ID, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not tunnel_to(node, peer_id):
            await trio.sleep(0.05)


def forged(binary: Path, nid: str, go_id: str) -> str:
    """A certificate for the network, signed by a key that is neither the owner's nor an admin's."""
    out = run_tool(binary, ["membership", "issue", "--signer-seed", "66" * 32, "--network", nid, "--peer", go_id,
                            "--name", "mallory", "--forge"])
    return str(out[0]["certificate"])


def expired(owner_dir: Path, nid: str, go_id: str) -> str:
    """Owner-signed, but over three days ago, for two days: void now, skew or not."""
    pid = ID.from_base58(go_id).to_bytes()
    a = addressing.derive(pid, nid)
    start = int(time.time()) - 5 * DAY
    data = cert.issue(Store(owner_dir).signer_from_owner(), network=nid, peer_id=pid, name="late", ipv4=a.ipv4,
                      ipv6=a.ipv6, roles=0, groups=(), not_before=start, not_after=start + 2 * DAY)
    return cert.to_text(data)


def foreign(binary: Path, peer_id: str) -> tuple[str, str]:
    """(network ID, certificate): a valid certificate of another network, owned by a Go key."""
    other = run_tool(binary, ["membership", "network", "--owner-seed", "b0" * 32])[0]["network_id"]
    out = run_tool(binary, ["membership", "issue", "--signer-seed", "b0" * 32, "--network", other, "--peer", peer_id,
                            "--name", "abroad"])
    return other, str(out[0]["certificate"])


@pytest.mark.parametrize("kind", ["forged", "tampered", "foreign", "expired", "revoked"])
async def test_python_refuses_a_go_peer_with_a_bad_certificate(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    net = PyNet(tmp_path, capsys, [])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    if kind == "forged":
        certificate = forged(go_peer_bin, net.nid, go_id)
    elif kind == "tampered":  # an owner-signed certificate with one signature bit flipped
        raw = bytearray(cert.from_text(net.admit(go_id, "gopher")["certificate"]))
        raw[-1] ^= 0x01
        certificate = cert.to_text(bytes(raw))
    elif kind == "expired":
        certificate = expired(tmp_path / "owner", net.nid, go_id)
    elif kind == "foreign":  # valid in its own network; the Go peer claims ours in its Hello
        certificate = foreign(go_peer_bin, go_id)[1]
    else:
        certificate = net.admit(go_id, "gopher")["certificate"]
        cli("revoke", go_id, "--dir", str(tmp_path / "owner"))
        await trio.sleep(1.1)  # the revocation's not_before is now + 1: wait until it applies
    owner = net.node("owner")
    async with running(owner):
        with go_vpn(go_peer_bin, GO_SEED, net.nid, certificate, "--peer", net.cluster.addr("owner")) as go:
            await go.aready()
            if kind != "revoked":  # Go checks its own certificate too, and says so, but presents it
                await go.await_event("own_certificate_invalid")
            closed = await go.await_event("close_received", lambda e: e["peer"] == str(owner.peer_id))
            assert closed["code"] == "NOT_AUTHORIZED", closed
            assert {"forged": "neither the network owner", "tampered": "bad signature", "expired": "expired",
                    "revoked": "revoked", "foreign": "is for network"}[kind] in closed["reason"], closed
            assert owner.manager.handshake_failures["not_authorized"] >= 1
            assert not tunnel_to(owner, ID.from_base58(go_id))
            assert go.find("tunnel_up") is None or not tunnel_to(owner, ID.from_base58(go_id))


async def test_a_python_revocation_reaches_the_go_peer_which_cuts_the_member_off(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The owner revokes m1: the list is pushed to the Go member, which closes its tunnel to m1 with
    NOT_AUTHORIZED and refuses m1's Hello from then on (it keeps dialing m1)."""
    net = PyNet(tmp_path, capsys, ["m1"])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher")
    owner, m1 = net.node("owner"), net.node("m1", [net.cluster.addr("owner")])
    async with running(owner, m1):
        with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"], "--peer", net.cluster.addr("owner"),
                    "--peer", net.cluster.addr("m1")) as go:
            await go.aready()
            for who in (owner, m1):
                await go.await_event("tunnel_up", lambda e, w=who: e["peer"] == str(w.peer_id))
            await wait_up(m1, owner, 20)
            mark = go.mark()
            start = trio.current_time()
            await trio.to_thread.run_sync(cli, "revoke", "m1", "--dir", str(tmp_path / "owner"))
            merged = await go.await_event("revocations_merged", lambda e: e["via"] == "push", start=mark, timeout=10)
            assert merged["changed"] == [str(m1.peer_id)], merged
            down = await go.await_event("tunnel_down", lambda e: e["peer"] == str(m1.peer_id), start=mark, timeout=10)
            assert trio.current_time() - start < 10
            assert down.get("sent_close") == "NOT_AUTHORIZED" or down.get("received_close") == "NOT_AUTHORIZED", down
            # Go re-dials m1 and refuses its (revoked) certificate.
            refused = await go.await_event("hello_rejected", lambda e: e["peer"] == str(m1.peer_id), start=mark,
                                           timeout=15)
            assert refused["code"] == "NOT_AUTHORIZED" and "revoked" in refused["reason"], refused
            assert tunnel_to(owner, ID.from_base58(go_id))  # the Go member itself stays in
            assert go.find("close_received", lambda e: e["peer"] == str(owner.peer_id), start=mark) is None


@pytest.mark.parametrize("kind", ["stranger", "expired", "foreign"])
async def test_the_go_member_refuses_a_python_peer_without_a_valid_certificate(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A node with the network ID but no certificate, or an expired one, or a member of another network,
    dials the Go member: refused (NOT_AUTHORIZED, or WRONG_NETWORK before any certificate is looked at)."""
    net = PyNet(tmp_path, capsys, [])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher")
    py = net.cluster.node("py")
    if kind == "expired":
        store = Store(tmp_path / "py")
        store.create(net.nid, "lab")
        store.save_certificate(cert.from_text(expired(tmp_path / "owner", net.nid, str(py.peer_id))))
    network = net.nid
    if kind == "foreign":
        network, text = foreign(go_peer_bin, str(py.peer_id))
        cli("join", text, "--dir", str(tmp_path / "py"))
    with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"]) as go:
        await go.aready()
        py = net.cluster.node("py", [go.addr()], network=network)
        assert (py.membership is None) == (kind == "stranger")
        async with running(py):
            refused = await go.await_event("hello_rejected", lambda e: e["peer"] == str(py.peer_id))
            assert refused["code"] == ("WRONG_NETWORK" if kind == "foreign" else "NOT_AUTHORIZED"), refused
            assert {"stranger": "no membership certificate", "expired": "expired",
                    "foreign": "is not " + net.nid}[kind] in refused["reason"]
            with trio.fail_after(10):
                while py.manager.peers.get(ID.from_base58(go_id)) is None or \
                        py.manager.peers[ID.from_base58(go_id)].last_error is None:
                    await trio.sleep(0.05)
            assert go.find("tunnel_up") is None
            assert (await go.stats())["counters"].get("certificate_refused", 0) == (kind == "expired")


async def test_a_python_member_renews_and_pushes_its_certificate_to_the_go_member(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """m1's certificate lives 20 s; at half-time m1 renews it at the owner and pushes it on its tunnels:
    the Go member verifies the pushed certificate (same peer, same addresses) and keeps the tunnel."""
    net = PyNet(tmp_path, capsys, [])
    net.cluster.node("m1")
    cli("join", net.admit(str(net.cluster.nodes["m1"].peer_id), "m1", "--expires", "20s")["certificate"],
        "--dir", str(tmp_path / "m1"))
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher")
    owner, m1 = net.node("owner"), net.node("m1", [net.cluster.addr("owner")])
    first = m1.membership.own.not_after  # type: ignore[union-attr]
    async with running(owner, m1):
        with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"], "--peer", net.cluster.addr("m1")) as go:
            await go.aready()
            up = await go.await_event("tunnel_up", lambda e: e["peer"] == str(m1.peer_id))
            pushed = await go.await_event("certificate_pushed", lambda e: e["peer"] == str(m1.peer_id), timeout=25)
            assert pushed["name"] == "m1" and pushed["not_after"] > first, (pushed, first)
            assert m1.membership.own.not_after == pushed["not_after"]  # type: ignore[union-attr]
            assert go.find("tunnel_down", lambda e: e["peer"] == str(m1.peer_id)) is None
            assert go.events.index(up) < go.events.index(pushed)
            await ping_go(m1, net.cluster.tuns["m1"], go, seq=3)


def clashing(owner_dir: Path, nid: str, peer_id: ID, holder: Node) -> bytes:
    """Owner-signed for ``peer_id``, but with ``holder``'s addresses: a signer's error (§15.9.1)."""
    own = holder.membership.own  # type: ignore[union-attr]
    now = int(time.time())
    return cert.issue(Store(owner_dir).signer_from_owner(), network=nid, peer_id=peer_id.to_bytes(), name="clash",
                      ipv4=own.ipv4, ipv6=own.ipv6, roles=0, groups=(), not_before=now, not_after=now + DAY)


async def test_one_address_one_peer_in_both_directions(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid certificate claiming m1's addresses is refused with ADDRESS_MISMATCH: by a Python node that
    knows m1 (the Go peer presents it), and by the Go peer that has m1 (a Python peer presents it)."""
    net = PyNet(tmp_path, capsys, ["m1"])
    go_id = ID.from_base58(go_peer_id(go_peer_bin, GO_SEED))
    owner, m1 = net.node("owner"), net.node("m1", [net.cluster.addr("owner")])
    net.cluster.node("m2")
    store = Store(tmp_path / "m2")
    store.create(net.nid, "lab")
    store.save_certificate(clashing(tmp_path / "owner", net.nid, net.cluster.nodes["m2"].peer_id, m1))
    async with running(owner, m1):
        await wait_up(owner, m1, 20)
        # 1. Python judges: the Go peer claims m1's addresses.
        bad = cert.to_text(clashing(tmp_path / "owner", net.nid, go_id, m1))
        with go_vpn(go_peer_bin, GO_SEED, net.nid, bad, "--peer", net.cluster.addr("owner")) as go:
            await go.aready()
            closed = await go.await_event("close_received", lambda e: e["peer"] == str(owner.peer_id))
            assert closed["code"] == "ADDRESS_MISMATCH", closed
            assert owner.manager.handshake_failures["address_mismatch"] >= 1 and tunnel_to(owner, m1.peer_id)
        # 2. Go judges: m1 has a tunnel with the Go member; m2 comes with m1's addresses.
        good = net.admit(str(go_id), "gopher")["certificate"]
        with go_vpn(go_peer_bin, GO_SEED, net.nid, good, "--peer", net.cluster.addr("m1")) as go:
            await go.aready()
            await go.await_event("tunnel_up", lambda e: e["peer"] == str(m1.peer_id))
            m2 = net.cluster.node("m2", [go.addr()], network=net.nid)
            async with running(m2):
                refused = await go.await_event("hello_rejected", lambda e: e["peer"] == str(m2.peer_id))
                assert refused["code"] == "ADDRESS_MISMATCH" and "already used" in refused["reason"], refused
                assert go.find("tunnel_down", lambda e: e["peer"] == str(m1.peer_id)) is None


async def test_a_python_revocation_list_travels_through_a_go_dht_to_a_go_member(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """§15.9.4: the owner stores its list under /p2pvpn/<network ID>/revocations in a Go DHT server (which
    validates it); a Go member started later reads it there, and refuses the revoked member."""
    net = PyNet(tmp_path, capsys, ["m1"])
    go_id = go_peer_id(go_peer_bin, GO_SEED)
    issued = net.admit(go_id, "gopher")
    key = f"/p2pvpn/{net.nid}/revocations"
    with GoPeer(go_peer_bin, "dht", "--network", net.nid, *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as boot:
        await boot.aready()
        owner = net.cluster.node("owner", network=net.nid, bootstrap=[boot.addr()], discovery_interval=0.5)
        async with running(owner):
            await trio.to_thread.run_sync(cli, "revoke", "m1", "--dir", str(tmp_path / "owner"))
            stored = await boot.await_event("record_validated", lambda e: e["key"] == key, timeout=30)
            assert stored["ok"], stored
            await trio.sleep(1.1)  # the revocation's not_before is now + 1
            with go_vpn(go_peer_bin, GO_SEED, net.nid, issued["certificate"], "--bootstrap", boot.addr()) as go:
                await go.aready()
                merged = await go.await_event("revocations_merged", lambda e: e["via"] == "dht", timeout=40)
                assert merged["changed"] == [str(net.cluster.nodes["m1"].peer_id)], merged
                m1 = net.node("m1", [go.addr()])
                async with running(m1):
                    refused = await go.await_event("hello_rejected", lambda e: e["peer"] == str(m1.peer_id))
                    assert refused["code"] == "NOT_AUTHORIZED" and "revoked" in refused["reason"], refused


# -- a network owned by Go ---------------------------------------------------------------------------------


async def test_python_nodes_run_on_go_issued_certificates_and_enforce_a_go_signed_revocation(
        go_peer_bin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Go is the owner (offline tool) and the Go node an admin: p1 holds an owner-signed certificate,
    p2 one the Go admin signed with its node key. The Go admin then revokes p2 with a list of its own."""
    tool = ["membership"]
    nid = run_tool(go_peer_bin, [*tool, "network", "--owner-seed", OWNER_SEED])[0]["network_id"]
    admin_id = go_peer_id(go_peer_bin, ADMIN_SEED)
    admin_cert = run_tool(go_peer_bin, [*tool, "issue", "--signer-seed", OWNER_SEED, "--network", nid, "--peer",
                                        admin_id, "--name", "goadmin", "--roles", "relay,admin", "--lifetime", "30d"])
    admin_text = admin_cert[0]["certificate"]
    cluster = Cluster(tmp_path)
    for name in ("p1", "p2"):
        cluster.node(name)
    certs = {
        "p1": run_tool(go_peer_bin, [*tool, "issue", "--signer-seed", OWNER_SEED, "--network", nid, "--peer",
                                     str(cluster.nodes["p1"].peer_id), "--name", "p1", "--groups", "dev"])[0],
        "p2": run_tool(go_peer_bin, [*tool, "issue", "--signer-seed", ADMIN_SEED, "--issuer-cert", admin_text,
                                     "--network", nid, "--peer", str(cluster.nodes["p2"].peer_id), "--name", "p2"])[0],
    }
    assert certs["p2"]["admin_signed"] and not certs["p1"]["admin_signed"]
    for name, issued in certs.items():
        cli("join", issued["certificate"], "--dir", str(tmp_path / name))  # Python verifies Go's certificate
        c = Store(tmp_path / name).certificate()
        assert c is not None and (str(c.ipv4), c.name) == (issued["ipv4"], name)
        assert (c.admin is not None) == (name == "p2")
    capsys.readouterr()

    revocations = tmp_path / "go-revocations"
    with go_vpn(go_peer_bin, ADMIN_SEED, nid, admin_text, "--revocations", str(revocations)) as go:
        await go.aready()
        go_addr = go.addr()
        p2 = cluster.node("p2", [go_addr, cluster.addr("p1")], network=nid)
        p1 = cluster.node("p1", [go_addr, cluster.addr("p2")], network=nid)
        assert p1.membership is not None and p2.membership is not None
        async with running(p1, p2):
            for node in (p1, p2):
                await go.await_event("certificate_accepted", lambda e, n=node: e["peer"] == str(n.peer_id))
                await wait_up_id(node, ID.from_base58(admin_id))
            await wait_up(p1, p2, 20)
            await wait_up(p2, p1, 20)
            go_cert = p1.membership.presented[ID.from_base58(admin_id).to_bytes()]
            assert go_cert.name == "goadmin" and go_cert.has_role(4)
            await ping_go(p1, cluster.tuns["p1"], go, seq=7)

            # The Go admin revokes p2: a list signed with its node key, its admin certificate attached.
            mark = go.mark()
            start = trio.current_time()
            listed = run_tool(go_peer_bin, [*tool, "revoke", "--signer-seed", ADMIN_SEED, "--issuer-cert", admin_text,
                                            "--network", nid, "--seq", "1",
                                            "--entry", f"{p2.peer_id}={int(time.time()) + 1}"])[0]
            await trio.sleep(1.1)  # not_before = now + 1
            revocations.write_text(listed["list"] + "\n")
            await go.await_event("revocations_merged", lambda e: e["via"] == "file", start=mark, timeout=10)
            await go.await_event("membership_closed", lambda e: e["peer"] == str(p2.peer_id), start=mark, timeout=10)
            with trio.fail_after(10):
                while tunnel_to(p1, p2.peer_id) or tunnel_to(p2, p1.peer_id) or tunnel_to(p2, ID.from_base58(admin_id)):
                    await trio.sleep(0.05)
            assert trio.current_time() - start < 12
            assert p2.peer_id.to_bytes() in p1.membership.revocations.entries  # learned from Go's push
            assert p1.membership_service is not None and p1.membership_service.counters["received"] >= 1
            assert go.find("pushed", lambda e: e["peer"] == str(p1.peer_id) and e.get("status") == 0, start=mark)
            # p2 keeps dialing both (static peers) and is refused by Go and by p1.
            refused = await go.await_event("hello_rejected", lambda e: e["peer"] == str(p2.peer_id), start=mark,
                                           timeout=15)
            assert refused["code"] == "NOT_AUTHORIZED" and "revoked" in refused["reason"], refused
            assert tunnel_to(p1, ID.from_base58(admin_id))  # everyone else stays connected
            await ping_go(p1, cluster.tuns["p1"], go, seq=8)
