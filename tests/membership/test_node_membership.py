"""Certificates in running nodes (real libp2p hosts on loopback, in-memory TUNs): who gets a tunnel,
and a revocation cutting a member off everywhere (docs/protocol.md §15.9)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pvpn import config
from p2pvpn.cli import app
from p2pvpn.cli_membership import create_network
from p2pvpn.membership import cert
from p2pvpn.membership.store import Store
from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running, wait_up


def cli(*args: str) -> None:
    app(list(args), standalone_mode=False)


def member(cluster: Cluster, tmp_path: Path, name: str, nid: str, capsys: object) -> None:
    """Give ``name`` (already built once, so it has a key) a certificate from the owner."""
    from p2pvpn import identity

    pid = str(identity.peer_id(identity.load(tmp_path / name / identity.KEY_FILE)))
    capsys.readouterr()  # type: ignore[attr-defined]
    cli("admit", pid, "--dir", str(tmp_path / "owner"), "--name", name)
    certificate = capsys.readouterr().out.strip()  # type: ignore[attr-defined]
    cli("join", certificate, "--dir", str(tmp_path / name))
    assert config.load(tmp_path / name).network == nid


def build(tmp_path: Path, capsys: object, names: list[str]) -> tuple[Cluster, str]:
    cluster = Cluster(tmp_path)
    for name in ["owner", *names]:
        cluster.node(name)
    nid, _ = create_network(tmp_path / "owner", "lab")
    for name in names:
        member(cluster, tmp_path, name, nid, capsys)
    return cluster, nid


def tunnel_to(node: Node, other: Node) -> bool:
    p = node.manager.peers.get(other.peer_id) if node.manager else None
    return p is not None and p.tunnel is not None


async def test_members_get_tunnels_with_certificate_addresses_strangers_do_not(tmp_path: Path, capsys: object) -> None:
    cluster, nid = build(tmp_path, capsys, ["m1"])
    cluster.node("stranger")
    owner = cluster.node("owner", network=nid)
    m1 = cluster.node("m1", [cluster.addr("owner")], network=nid)
    # Same network ID, dials the owner: no certificate, so no tunnel.
    stranger = cluster.node("stranger", [cluster.addr("owner")], network=nid)
    assert m1.membership is not None and stranger.membership is None
    async with running(owner, m1, stranger):
        await wait_up(m1, owner, 20)
        await wait_up(owner, m1, 20)
        own = m1.membership.own
        assert (m1.addresses.ipv4, m1.addresses.ipv6) == (own.ipv4, own.ipv6)
        seen = owner.manager.peers[m1.peer_id]
        assert (seen.addresses.ipv4, seen.addresses.ipv6) == (own.ipv4, own.ipv6)  # anti-spoofing uses these
        assert owner.membership is not None and m1.peer_id.to_bytes() in owner.membership.presented
        with trio.fail_after(15):
            while owner.manager.handshake_failures["not_authorized"] < 1:
                await trio.sleep(0.1)
        # The stranger's own side may hold a tunnel for a moment, until our Close arrives; ours never does.
        assert not tunnel_to(owner, stranger)
        assert owner.manager.peers.get(stranger.peer_id) is None or owner.manager.peers[stranger.peer_id].tunnel is None


async def test_a_listed_stranger_still_gets_a_tunnel(tmp_path: Path, capsys: object) -> None:
    """The two-host quick start without a network keeps working next to an owned network."""
    cluster, nid = build(tmp_path, capsys, [])
    old = cluster.node("old")
    owner = cluster.node("owner", [cluster.addr("old")], network=nid)
    old = cluster.node("old", [cluster.addr("owner")], network=nid)
    async with running(owner, old):
        await wait_up(owner, old, 20)
        await wait_up(old, owner, 20)


async def test_revocation_cuts_a_member_off_everywhere_within_10_s(tmp_path: Path, capsys: object) -> None:
    cluster, nid = build(tmp_path, capsys, ["m1", "m2"])
    for name in ("owner", "m1", "m2"):  # a full mesh of static peers: only certificates can cut m2 off
        cluster.node(name, network=nid)
    owner = cluster.node("owner", [cluster.addr("m1"), cluster.addr("m2")], network=nid)
    m1 = cluster.node("m1", [cluster.addr("owner"), cluster.addr("m2")], network=nid)
    m2 = cluster.node("m2", [cluster.addr("owner"), cluster.addr("m1")], network=nid)
    assert m1.membership is not None

    def cut_off() -> bool:
        """The owner and m1 (by push) know the revocation and hold no tunnel with m2, and m2 holds none now.

        Knowing it is part of the promise: a tunnel to m2 can also drop for a moment on its own (keepalives
        on a starved CPU). m2 keeps redialing its static peers and holds each tunnel only until the Close
        arrives, so "none now" is a moment between two of its dials.
        """
        assert m1.membership_service is not None and owner.membership is not None and m1.membership is not None
        revoked = m2.peer_id.to_bytes()
        return (revoked in owner.membership.revocations.entries and revoked in m1.membership.revocations.entries
                and m1.membership_service.counters["received"] >= 1
                and not (tunnel_to(owner, m2) or tunnel_to(m1, m2) or tunnel_to(m2, m1) or tunnel_to(m2, owner)))

    async with running(owner, m1, m2):
        for a, b in ((owner, m1), (owner, m2), (m1, m2), (m2, m1)):
            await wait_up(a, b, 20)
        await trio.to_thread.run_sync(cli, "revoke", "m2", "--dir", str(tmp_path / "owner"))
        start = trio.current_time()  # the list is in the owner's directory: from here on it is the nodes' job
        with trio.fail_after(10):
            while not cut_off():
                await trio.sleep(0.05)
        took = trio.current_time() - start
        # m1 learned it by push (counted above), and stores it (in a thread, after closing the tunnel):
        # a restart remembers.
        with trio.fail_after(10):
            while m2.peer_id.to_bytes() not in Store(tmp_path / "m1").revocations().entries:
                await trio.sleep(0.05)
        # m2 keeps dialing (static peers) with its old certificate and is refused for good.
        await trio.sleep(3)
        assert not tunnel_to(owner, m2) and not tunnel_to(m1, m2)
        assert m1.manager.handshake_failures["not_authorized"] + owner.manager.handshake_failures["not_authorized"] > 0
        # m1 stays a member for both: its tunnel with the owner is up (or back, if a starved CPU let it time out).
        await wait_up(owner, m1, 20)
        await wait_up(m1, owner, 20)
        assert owner.membership_service is not None and owner.membership_service.is_member(m1.peer_id)
        assert m1.membership_service is not None and m1.membership_service.is_member(owner.peer_id)
    assert took < 10
    assert cert.is_revoked(m2.membership.own, m1.membership.revocations.entries)  # type: ignore[union-attr]


async def test_a_relay_judges_members_by_the_certificate_they_present(tmp_path: Path, capsys: object) -> None:
    """No DHT lookup: a member shows its certificate before reserving; a stranger has none to show."""
    import multiaddr

    cluster, nid = build(tmp_path, capsys, ["m1"])
    cluster.node("stranger")
    owner = cluster.node("owner", network=nid, relay=True)
    m1 = cluster.node("m1", network=nid)
    stranger = cluster.node("stranger", network=nid)
    assert m1.traversal is None  # set when running
    async with running(owner, m1, stranger):
        assert m1.traversal is not None and m1.membership_service is not None
        assert m1.traversal.keeper.before_reserve == m1.membership_service.present
        assert not await owner._is_member(m1.peer_id)
        relay_addr = multiaddr.Multiaddr(cluster.addr("owner").split("/p2p/")[0])
        for node in (m1, stranger):
            await node.host.connect(owner.peer_id, [relay_addr])
        await m1.membership_service.present(owner.peer_id)
        assert await owner._is_member(m1.peer_id)
        assert not await owner._is_member(stranger.peer_id)
        assert owner.membership_service is not None and owner.membership_service.counters["certificates"] == 1
        await trio.to_thread.run_sync(cli, "revoke", "m1", "--dir", str(tmp_path / "owner"))
        with trio.fail_after(5):
            while await owner._is_member(m1.peer_id):
                await trio.sleep(0.1)


async def test_renewal_keeps_tunnels_up_across_expiry(tmp_path: Path, capsys: object) -> None:
    """Time is moved on every node's membership clock: m1 renews at its admin and stays; m2 may not and is cut."""
    import time

    from p2pvpn import identity

    cluster = Cluster(tmp_path)
    for name in ("owner", "m1", "m2"):
        cluster.node(name)
    nid, _ = create_network(tmp_path / "owner", "lab")
    for name in ("m1", "m2"):
        pid = str(identity.peer_id(identity.load(tmp_path / name / identity.KEY_FILE)))
        capsys.readouterr()  # type: ignore[attr-defined]
        cli("admit", pid, "--dir", str(tmp_path / "owner"), "--name", name, "--expires", "10m")
        cli("join", capsys.readouterr().out.strip(), "--dir", str(tmp_path / name))  # type: ignore[attr-defined]
        cluster.node(name, network=nid)
    owner = cluster.node("owner", [cluster.addr("m1"), cluster.addr("m2")], network=nid)
    m1 = cluster.node("m1", [cluster.addr("owner"), cluster.addr("m2")], network=nid)
    m2 = cluster.node("m2", [cluster.addr("owner"), cluster.addr("m1")], network=nid)
    offset = [0.0]
    for node in (owner, m1, m2):
        node.membership.clock = lambda: time.time() + offset[0]  # type: ignore[union-attr]
    old_expiry = m1.membership.own.not_after  # type: ignore[union-attr]
    async with running(owner, m1, m2):
        assert m2.membership_service is not None and m1.membership_service is not None
        m2.membership_service.renew_enabled = False
        for a, b in ((owner, m1), (owner, m2), (m1, m2), (m1, owner)):
            await wait_up(a, b, 20)
        offset[0] = 400.0  # 200 s of 600 left: m1 renews at the owner
        with trio.fail_after(10):
            while owner.membership.presented[m1.peer_id.to_bytes()].not_after <= old_expiry:  # type: ignore[union-attr]
                await trio.sleep(0.1)
        assert m1.membership_service.counters["renewed"] == 1
        assert m1.membership.presented[owner.peer_id.to_bytes()] is not None  # type: ignore[union-attr]
        offset[0] = 600.0 + 301  # past the old certificates' expiry and the clock skew
        gone = m2.peer_id.to_bytes()
        with trio.fail_after(10):  # both closed m2's tunnel for expiry (and forgot its certificate), not a flap
            while (gone in owner.membership.presented or gone in m1.membership.presented  # type: ignore[union-attr]
                   or tunnel_to(owner, m2) or tunnel_to(m1, m2)):
                await trio.sleep(0.1)
        await trio.sleep(2)
        assert not tunnel_to(owner, m2) and not tunnel_to(m1, m2)
        # m1's renewed certificate kept its tunnel: m2's is the only one either side closed for expiry
        # (a tunnel that a starved CPU let time out comes back by itself).
        assert owner.membership_service is not None
        assert owner.membership_service.counters["tunnels_closed"] == 1 == m1.membership_service.counters["tunnels_closed"]
        await wait_up(owner, m1, 20)
        await wait_up(m1, owner, 20)
    assert Store(tmp_path / "m1").certificate().not_after > old_expiry  # type: ignore[union-attr]


async def test_status_reports_membership(tmp_path: Path, capsys: object) -> None:
    cluster, nid = build(tmp_path, capsys, [])
    owner = cluster.node("owner", network=nid)
    plain = cluster.node("plain")
    async with running(owner, plain):
        info = owner.status()["membership"]
        assert (info["network_id"], info["name"], info["certificate_problem"]) == (nid, "owner", None)
        assert plain.status()["membership"] is None


async def test_an_invited_member_with_only_the_owner_as_bootstrap_has_a_tunnel_within_10_s(
        tmp_path: Path, capsys: object) -> None:
    """The README path: create, invite, join (the token's bootstrap is the owner), up: a tunnel, by the DHT."""
    import secrets
    import time

    import multiaddr

    from p2pvpn.cli_membership import new_invite
    from p2pvpn.membership.invite import Pending

    cluster, nid = build(tmp_path, capsys, [])
    cluster.node("joiner")
    owner = cluster.node("owner", network=nid)
    async with running(owner) as nursery:
        addr = multiaddr.Multiaddr(cluster.addr("owner").split("/p2p/")[0]).to_bytes()
        token = new_invite(tmp_path / "owner", Pending(secrets.token_bytes(16), int(time.time()) + 60, 1), [addr])
        await trio.to_thread.run_sync(cli, "join", token, "--dir", str(tmp_path / "joiner"))
        cfg = config.load(tmp_path / "joiner")
        assert cfg.bootstrap == (cluster.addr("owner"),) and cfg.network == nid
        joiner = cluster.node("joiner", network=nid, bootstrap=cfg.bootstrap, discovery_interval=1.0)
        start = trio.current_time()
        await nursery.start(joiner.run)
        await wait_up(joiner, owner, 10)
        await wait_up(owner, joiner, 10)
        assert trio.current_time() - start < 10
        assert owner.membership.presented[joiner.peer_id.to_bytes()].name.startswith("peer-")  # type: ignore[union-attr]


async def test_control_lists_the_certificates_presented(tmp_path: Path, capsys: object) -> None:
    cluster, nid = build(tmp_path, capsys, ["m1"])
    owner = cluster.node("owner", network=nid)
    m1 = cluster.node("m1", [cluster.addr("owner")], network=nid)
    async with running(owner, m1):
        await wait_up(m1, owner, 20)
        texts = (await m1.handle_control("members"))["certificates"]
        assert [cert.open_certificate(cert.from_text(t), nid).name for t in texts] == ["owner"]


async def test_a_lapsed_record_does_not_cut_a_certified_members_tunnel(tmp_path: Path, capsys: object) -> None:
    """A record lapses when a DHT server restarts; the certificate, not the record, decides membership."""
    cluster, nid = build(tmp_path, capsys, ["m1"])
    owner = cluster.node("owner", network=nid)
    m1 = cluster.node("m1", [cluster.addr("owner")], network=nid)
    async with running(owner, m1):
        await wait_up(owner, m1, 20)
        assert owner.manager is not None
        peer = owner.manager.peers[m1.peer_id]
        peer.learned_from = "dht"  # as if its record had brought it
        owner.manager.forget(m1.peer_id)  # what discovery does when the record expires
        await trio.sleep(1)
        assert tunnel_to(owner, m1) and tunnel_to(m1, owner)
        assert not owner.manager.peers[m1.peer_id].wanted  # no redial once the tunnel ends
