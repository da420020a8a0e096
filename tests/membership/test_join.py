"""The join protocol between real libp2p hosts on loopback: an owner node running, joiners redeeming.

The inviting node is a real ``Node`` (in-memory TUN); joiners are bare hosts
speaking /p2pvpn/join/1.0.0, as ``p2pvpn join`` does.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import multiaddr
import trio

from p2pvpn import identity
from p2pvpn.cli_membership import create_network, new_invite
from p2pvpn.host import Host
from p2pvpn.membership import cert, invite
from p2pvpn.membership.invite import JoinStatus, Pending
from p2pvpn.membership.join import exchange, redeem, renew
from p2pvpn.membership.network import ROLE_EXIT
from p2pvpn.membership.store import Store
from p2pvpn.node import Node
from p2pvpn.testing.cluster import Cluster, running


def owner_node(tmp_path: Path) -> tuple[Cluster, Node, str]:
    cluster = Cluster(tmp_path)
    cluster.node("owner")  # creates the key and picks the port
    nid, _ = create_network(tmp_path / "owner", "lab")
    return cluster, cluster.node("owner", network=nid), nid


def addrs_of(cluster: Cluster) -> list[bytes]:
    return [multiaddr.Multiaddr(cluster.addr("owner").split("/p2p/")[0]).to_bytes()]


def pending(**kw: object) -> Pending:
    args: dict[str, object] = dict(secret=secrets.token_bytes(16), expires=int(time.time()) + 600, uses=1)
    args.update(kw)
    return Pending(**args)  # type: ignore[arg-type]


async def ask(tmp_path: Path, name: str, token: str) -> tuple[invite.JoinAnswer, object]:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    key_path = d / identity.KEY_FILE
    key = identity.load(key_path) if key_path.exists() else identity.create(key_path)
    host = Host(key, ["/ip4/127.0.0.1/tcp/0"])
    async with host.running():
        return await redeem(host, invite.parse_token(token), identity.peer_id(key)), key


async def test_invite_is_redeemed_once_and_retries_get_the_same_certificate(tmp_path: Path) -> None:
    cluster, owner, nid = owner_node(tmp_path)
    token = new_invite(tmp_path / "owner", pending(name="web", roles=ROLE_EXIT, groups=("dev",)), addrs_of(cluster))
    async with running(owner):
        answer, key = await ask(tmp_path, "a", token)
        assert answer.status is JoinStatus.OK, answer.message
        c = cert.verify(answer.certificate, nid, time.time(), {}, identity.peer_id(key).to_bytes())  # type: ignore[arg-type]
        assert (c.name, c.roles, c.groups) == ("web", ROLE_EXIT, ("dev",))
        assert answer.network_name == "lab"
        assert [str(multiaddr.Multiaddr(b)) for b in answer.bootstrap] == [cluster.addr("owner")]
        again, _ = await ask(tmp_path, "a", token)
        assert (again.status, again.certificate) == (JoinStatus.OK, answer.certificate)
        other, _ = await ask(tmp_path, "b", token)
        assert other.status is JoinStatus.USED_UP
    assert owner.joins is not None and owner.joins.answered == {"OK": 2, "USED_UP": 1}
    issued = Store(tmp_path / "owner").issued()
    assert {x.name for x in issued} == {"owner", "web"}


async def test_invite_made_while_the_node_runs_is_honoured(tmp_path: Path) -> None:
    cluster, owner, _ = owner_node(tmp_path)
    async with running(owner):
        token = new_invite(tmp_path / "owner", pending(uses=2), addrs_of(cluster))
        first, _ = await ask(tmp_path, "a", token)
        second, _ = await ask(tmp_path, "b", token)
    assert first.status is second.status is JoinStatus.OK
    names = {c.name for c in Store(tmp_path / "owner").issued()}
    assert len(names) == 3  # owner + two unique default names


async def test_expired_and_unknown_invites_are_refused(tmp_path: Path) -> None:
    cluster, owner, nid = owner_node(tmp_path)
    expired = new_invite(tmp_path / "owner", pending(expires=int(time.time()) - 1), addrs_of(cluster))
    parsed = invite.parse_token(new_invite(tmp_path / "owner", pending(), addrs_of(cluster)))
    unknown = invite.encode_token(invite.Invite(nid, parsed.inviter, parsed.addrs, secrets.token_bytes(16),
                                                parsed.expires))
    async with running(owner):
        for token, status in ((expired, JoinStatus.EXPIRED), (unknown, JoinStatus.UNKNOWN_INVITE)):
            answer, _ = await ask(tmp_path, "a", token)
            assert (answer.status, answer.certificate) == (status, b"")


async def test_a_snooped_request_is_useless_to_another_peer(tmp_path: Path) -> None:
    """Peer b replays the request peer a would send (same invite_id, a's proof): the proof is bound to a."""
    cluster, owner, nid = owner_node(tmp_path)
    token = invite.parse_token(new_invite(tmp_path / "owner", pending(), addrs_of(cluster)))
    victim = identity.peer_id(identity.create(tmp_path / "victim.key")).to_bytes()
    replay = invite.make_request(token, victim)
    key = identity.create(tmp_path / "thief.key")
    async with running(owner):
        host = Host(key, ["/ip4/127.0.0.1/tcp/0"])
        async with host.running():
            answer = await exchange(host, owner.peer_id, [multiaddr.Multiaddr(a) for a in token.addrs], replay)
    assert (answer.status, answer.certificate) == (JoinStatus.BAD_PROOF, b"")
    assert Store(tmp_path / "owner").invite(invite.invite_id(token.secret)).redeemed == {}  # type: ignore[union-attr]


async def test_renewal_keeps_name_and_addresses(tmp_path: Path) -> None:
    cluster, owner, nid = owner_node(tmp_path)
    token = new_invite(tmp_path / "owner", pending(name="db"), addrs_of(cluster))
    async with running(owner):
        answer, key = await ask(tmp_path, "a", token)
        host = Host(key, ["/ip4/127.0.0.1/tcp/0"])  # type: ignore[arg-type]
        async with host.running():
            await trio.sleep(1.1)  # a later not_before
            fresh = await renew(host, owner.peer_id, [multiaddr.Multiaddr(cluster.addr("owner").split("/p2p/")[0])],
                                answer.certificate)
    assert fresh.status is JoinStatus.OK, fresh.message
    old = cert.open_certificate(answer.certificate, nid)
    new = cert.open_certificate(fresh.certificate, nid)
    assert (new.name, new.ipv4, new.ipv6, new.peer_id) == (old.name, old.ipv4, old.ipv6, old.peer_id)
    assert new.not_before > old.not_before
