"""The membership commands, run as the CLI runs them (the typer app, in-process), on real node directories.

The invite path runs a real owner node (loopback, in-memory TUN) in a thread
with its own trio loop, and ``p2pvpn join TOKEN`` dials it for real.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from p2pvpn import config, identity
from p2pvpn.cli import app
from p2pvpn.errors import P2pvpnError
from p2pvpn.membership import cert, invite
from p2pvpn.membership.store import Store
from p2pvpn.testing.cluster import Cluster, free_port, running

MEMBER_KEYS = {"peer_id", "name", "ipv4", "ipv6", "roles", "groups", "expires", "revoked", "online"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stdout, or the one-line error as main() would print it."""
    try:
        app(list(args), standalone_mode=False)
    except P2pvpnError as exc:
        capsys.readouterr()
        message = str(exc)
        assert "\n" not in message, message
        return exc.exit_code, message
    return 0, capsys.readouterr().out


def peer_of(directory: Path) -> str:
    return str(identity.peer_id(identity.load(directory / identity.KEY_FILE)))


def test_create_admit_join_members_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner, member = tmp_path / "owner", tmp_path / "member"
    code, text = run(capsys, "network", "create", "lab", "--dir", str(owner))
    assert code == 0, text
    nid = Store(owner).network()[0]
    assert nid in text and config.load(owner).network == nid
    assert stat.S_IMODE((owner / "membership" / "owner.key").stat().st_mode) == 0o600
    run(capsys, "init", "--dir", str(member))
    pid = peer_of(member)
    code, text = run(capsys, "admit", pid, "--dir", str(owner), "--name", "web", "--roles", "exit,relay",
                     "--groups", "ops,dev", "--expires", "2d")
    assert code == 0, text
    certificate = text.strip()
    assert certificate.startswith("p2pvpn-cert1:") and "\n" not in certificate
    boot = f"/ip4/198.18.0.1/tcp/4242/p2p/{peer_of(owner)}"
    code, text = run(capsys, "join", certificate, "--dir", str(member), "--bootstrap", boot)
    assert code == 0, text
    cfg = config.load(member)
    assert (cfg.network, cfg.bootstrap) == (nid, (boot,))
    code, text = run(capsys, "members", "--dir", str(owner), "--json")
    rows = {r["name"]: r for r in json.loads(text)}
    assert set(rows) == {"owner", "web"} and all(set(r) == MEMBER_KEYS for r in rows.values())
    web = rows["web"]
    assert (web["peer_id"], web["roles"], web["groups"], web["revoked"], web["online"]) == \
        (pid, ["relay", "exit"], ["dev", "ops"], False, False)
    assert abs(web["expires"] - (time.time() + 2 * 86400)) < 60
    assert rows["owner"]["roles"] == ["relay", "exit", "admin"]
    code, text = run(capsys, "revoke", "web", "--dir", str(owner))
    assert code == 0 and pid in text
    rows = {r["name"]: r for r in json.loads(run(capsys, "members", "--dir", str(owner), "--json")[1])}
    assert rows["web"]["revoked"] is True and rows["owner"]["revoked"] is False
    assert Store(owner).revocations().seq == 1
    code, text = run(capsys, "members", "--dir", str(member))  # the table form works for a plain member too
    assert code == 0 and "web" in text


def test_key_rotation_keeps_name_and_addresses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = tmp_path / "owner"
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    old_key = identity.create(tmp_path / "old.key")
    new_key = identity.create(tmp_path / "new.key")
    nid = Store(owner).network()[0]
    first = cert.open_certificate(cert.from_text(run(capsys, "admit", str(identity.peer_id(old_key)), "--dir",
                                                     str(owner), "--name", "db")[1]), nid)
    code, text = run(capsys, "admit", str(identity.peer_id(new_key)), "--dir", str(owner), "--name", "db")
    assert code == 1 and "--replace" in text
    code, text = run(capsys, "admit", str(identity.peer_id(new_key)), "--dir", str(owner), "--name", "db",
                     "--replace")
    second = cert.open_certificate(cert.from_text(text), nid)
    assert (second.name, second.ipv4, second.ipv6) == (first.name, first.ipv4, first.ipv6)
    assert Store(owner).revocations().entries.keys() == {identity.peer_id(old_key).to_bytes()}


@pytest.mark.parametrize(("args", "words"), [
    (("join", "garbage"), "expected an invite token"),
    (("join", "p2pvpn-cert1:AAAA"), "not readable"),
    (("join", "p2pvpn-invite1:%%%"), "base64url"),
    (("invite", "--expires", "3x"), "--expires"),
    (("invite", "--roles", "relay,boss"), "unknown role 'boss'"),
    (("invite", "--groups", "a b"), "--groups"),
    (("invite", "--uses", "0"), "--uses"),
    (("revoke", "nobody"), "no member named 'nobody'"),
    (("admit", "notapeer"), "not an Ed25519 peer ID"),
    (("admit", "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5", "--name", "Bad_Name"), "DNS label"),
    (("network", "create", "again"), "already in network"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                  words: str) -> None:
    owner = tmp_path / "owner"
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    code, text = run(capsys, *args, "--dir", str(owner))
    assert code != 0 and words in text, text


def test_commands_need_a_network_or_admin_rights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain, owner = tmp_path / "plain", tmp_path / "owner"
    run(capsys, "init", "--dir", str(plain))
    for args in (("invite",), ("members",), ("revoke", "x")):
        code, text = run(capsys, *args, "--dir", str(plain))
        assert code != 0 and "in no network" in text
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    certificate = run(capsys, "admit", peer_of(plain), "--dir", str(owner))[1].strip()
    assert run(capsys, "join", certificate, "--dir", str(plain))[0] == 0
    code, text = run(capsys, "invite", "--dir", str(plain))
    assert code != 0 and "not an admin" in text
    other = tmp_path / "other"
    run(capsys, "network", "create", "other", "--dir", str(other))
    code, text = run(capsys, "join", certificate, "--dir", str(other))
    assert code != 0 and "already in network" in text
    code, text = run(capsys, "join", run(capsys, "admit", peer_of(owner), "--dir", str(other))[1].strip(),
                     "--dir", str(tmp_path / "fresh"))
    assert code != 0 and "another peer" in text


@contextmanager
def node_in_thread(tmp_path: Path, name: str) -> Iterator[Cluster]:
    """Run the node of ``tmp_path/name`` (already a network member) until the block ends."""
    cluster = Cluster(tmp_path)
    cluster.node(name)
    node = cluster.node(name, network=config.load(tmp_path / name).network)
    ready, holder = threading.Event(), {}

    async def main() -> None:
        with trio.CancelScope() as scope:
            holder["scope"], holder["token"] = scope, trio.lowlevel.current_trio_token()
            async with running(node):
                ready.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "node did not start"
        yield cluster
    finally:
        if "token" in holder:
            trio.from_thread.run_sync(holder["scope"].cancel, trio_token=holder["token"])
        thread.join(30)


def test_join_with_a_token_from_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner, member = tmp_path / "owner", tmp_path / "member"
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    with node_in_thread(tmp_path, "owner") as cluster:
        code, text = run(capsys, "invite", "--dir", str(owner), "--name", "laptop", "--json")
        assert code == 0, text
        info = json.loads(text)
        token = info["token"]
        assert (info["uses"], info["name"]) == (1, "laptop")
        parsed = invite.parse_token(token)
        assert cluster.addr("owner").split("/p2p/")[0] in [str(__import__("multiaddr").Multiaddr(a))
                                                           for a in parsed.addrs]
        code, text = run(capsys, "join", token, "--dir", str(member))
        assert code == 0, text
        cfg = config.load(member)
        assert cfg.network == Store(owner).network()[0] and cfg.bootstrap == (cluster.addr("owner"),)
        assert Store(member).certificate().name == "laptop"  # type: ignore[union-attr]
        code, text = run(capsys, "join", token, "--dir", str(tmp_path / "second"))
        assert code != 0 and "already used" in text
        rows = {r["name"]: r for r in json.loads(run(capsys, "members", "--dir", str(owner), "--json")[1])}
        assert rows["owner"]["online"] is True and "laptop" in rows
        # A plain member lists what the running node saw presented; here only its own (it is not running).
        mine = json.loads(run(capsys, "members", "--dir", str(member), "--json")[1])
        assert [r["name"] for r in mine] == ["laptop"]


def test_unreachable_or_expired_invites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = tmp_path / "owner"
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    dead = __import__("multiaddr").Multiaddr(f"/ip4/127.0.0.1/tcp/{free_port()}").to_bytes()
    from p2pvpn.cli_membership import new_invite

    token = new_invite(owner, invite.Pending(secret=bytes(16), expires=int(time.time()) + 60, uses=1), [dead])
    start = time.monotonic()
    code, text = run(capsys, "join", token, "--dir", str(tmp_path / "m"))
    assert code != 0 and "cannot reach the inviter" in text, text
    assert time.monotonic() - start < 30
    old = new_invite(owner, invite.Pending(secret=bytes(range(16)), expires=int(time.time()) - 5, uses=1), [dead])
    code, text = run(capsys, "join", old, "--dir", str(tmp_path / "m"))
    assert code != 0 and "expired" in text
