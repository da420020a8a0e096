"""``p2pvpn network create``, ``invite``, ``join``, ``admit``, ``members``, ``revoke`` (docs/protocol.md §15.11).

Each command reads and writes the node directory's membership files
(p2pvpn.membership.store); only ``join TOKEN`` talks to the network, and
``invite``/``members`` ask the running node, if any, for its addresses and
tunnels. Every user error is a P2pvpnError: one line, non-zero exit.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import multiaddr
import typer
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from rich.console import Console
from rich.table import Table

from p2pvpn import config, identity
from p2pvpn.errors import ConfigError, ControlError, P2pvpnError
from p2pvpn.membership import authority, cert, invite
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import (
    ROLE_ADMIN,
    ROLE_EXIT,
    ROLE_RELAY,
    is_group,
    network_id,
    parse_roles,
    roles_to_names,
    signer_from_key_pair,
)
from p2pvpn.membership.revocation import RevocationSet
from p2pvpn.membership.store import Store

out = Console()
network_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Create and inspect owned networks.")

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, config.toml, membership/).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="The member's name: a lowercase DNS label.")]
RolesOpt = Annotated[Optional[str], typer.Option("--roles", help="Roles the member may offer: relay,exit,admin.")]
GroupsOpt = Annotated[Optional[str], typer.Option("--groups", help="Comma-separated groups, for access rules.")]
ExpiresOpt = Annotated[Optional[str], typer.Option("--expires", help="How long it is valid: e.g. 90s, 30m, 12h, 7d.")]

_DURATION_RE = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(app: typer.Typer) -> None:
    """Add the membership commands to the main ``p2pvpn`` app."""
    app.add_typer(network_app, name="network")
    for command in (invite_cmd, join_cmd, admit_cmd, members_cmd, revoke_cmd):
        app.command(command.__name__.removesuffix("_cmd"))(command)


def parse_duration(text: str, what: str = "--expires") -> int:
    m = _DURATION_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise MembershipError(f"{what}: {text!r} is not a duration like 90s, 30m, 12h or 7d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _roles(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_roles(text)
    except ValueError as exc:
        raise MembershipError(f"--roles: {exc}") from None


def _groups(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    groups = tuple(sorted({g.strip() for g in text.split(",") if g.strip()}, key=str.encode))
    bad = [g for g in groups if not is_group(g)]
    if bad or len(groups) > cert.MAX_GROUPS:
        raise MembershipError(f"--groups: at most {cert.MAX_GROUPS} names of 1-32 characters A-Z a-z 0-9 . _ -"
                              + (f" ({bad[0]!r} is not one)" if bad else ""))
    return groups


def _node_key(directory: Path, create: bool = False) -> KeyPair:
    path = directory / identity.KEY_FILE
    if create and not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return identity.create(path)
    return identity.load(path)


def set_config(directory: Path, **values: str | bool | list[str]) -> None:
    """Set keys of ``config.toml`` in place (creating it from the template), then check the result loads."""
    path = directory / config.CONFIG_FILE
    try:
        text = path.read_text() if path.exists() else config.template()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    lines = text.splitlines()
    for key, value in values.items():
        rendered = f"{key} = {json.dumps(value)}"  # JSON strings and string lists are valid TOML
        pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
        for i, line in enumerate(lines):
            if pattern.match(line):
                lines[i] = rendered
                break
        else:
            lines.append(rendered)
    try:
        path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    config.load(directory)


def _running_reply(directory: Path, cmd: str) -> dict[str, Any] | None:
    """The running node's answer, or None when no node runs on this directory."""
    from p2pvpn.control import client
    from p2pvpn.node import control_path

    try:
        return client.request(control_path(config.load(directory), directory), cmd)
    except ControlError:
        return None


def _own_addrs(directory: Path, peer: ID) -> list[bytes]:
    """Where joiners can dial this node: the running node's addresses, else the configured ones."""
    reply = _running_reply(directory, "status")
    texts: list[str] = []
    if reply and reply.get("listen"):
        texts = [a.split("/p2p/")[0] for a in reply["listen"]]
    else:
        from p2pvpn.host import expand_unspecified

        cfg = config.load(directory)
        for a in cfg.announce or cfg.listen:
            texts += [str(m) for m in expand_unspecified(multiaddr.Multiaddr(a), {cfg.tun})]
    out_addrs: list[bytes] = []
    for text in texts:
        host = text.split("/")[2] if text.count("/") >= 2 else ""
        try:
            if ipaddress.ip_address(host).is_unspecified:
                continue
        except ValueError:
            pass  # a DNS name
        raw = multiaddr.Multiaddr(text).to_bytes()
        if raw not in out_addrs and len(raw) <= invite.MAX_ADDR_LEN:
            out_addrs.append(raw)
    if not out_addrs:
        raise MembershipError("this node has no address a joiner could dial; set listen or announce in config.toml")
    return out_addrs[: invite.MAX_INVITE_ADDRS]


def _peer_text(raw: bytes) -> str:
    return ID(raw).to_base58()


def _parse_peer(text: str) -> bytes | None:
    try:
        return config.parse_peer_id(text).to_bytes()
    except ConfigError:
        return None


def create_network(directory: Path, name: str, now: float | None = None) -> tuple[str, Certificate]:
    """Owner key, network files, this node's admin certificate, ``network`` in config.toml."""
    if not name or len(name.encode()) > 64 or not name.isprintable():
        raise MembershipError("NAME must be 1-64 printable characters")
    store = Store(directory)
    if store.exists():
        nid, label = store.network()
        raise MembershipError(f"{directory} is already in network {nid} ({label}); use another --dir")
    node_key = _node_key(directory, create=True)
    store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = signer_from_key_pair(store.create_owner_key())  # refuses to overwrite one left by an earlier attempt
    nid = network_id(owner.public_key)
    store.create(nid, name)
    peer = identity.peer_id(node_key).to_bytes()
    admission = authority.admit(owner, nid, peer, issued=[], revoked={}, now=time.time() if now is None else now,
                                name="owner", roles=ROLE_RELAY | ROLE_EXIT | ROLE_ADMIN, groups=())
    store.save_certificate(admission.certificate)
    store.save_issued(admission.certificate)
    set_config(directory, network=nid)
    return nid, cert.open_certificate(admission.certificate, nid)


@network_app.command("create")
def network_create(name: Annotated[str, typer.Argument(help="The network's label (not a secret, not unique).")],
                   directory: DirOpt = Path("/etc/p2pvpn")) -> None:
    """Create an owned network: owner key, this node as first member and admin; print the network ID."""
    nid, c = create_network(directory, name)
    out.print(f"created network {name!r}: id [bold]{nid}[/bold]", highlight=False)
    out.print(f"this node {_peer_text(c.peer_id)} is member 'owner' ({c.ipv4}, {c.ipv6}), admin", highlight=False)
    out.print(f"owner key: {Store(directory).root / 'owner.key'} (back it up offline; admins can work without it)",
              highlight=False)
    out.print(f"next: p2pvpn up --dir {directory}; p2pvpn invite --dir {directory}", highlight=False)


def new_invite(directory: Path, pending: invite.Pending, addrs: list[bytes] | None = None) -> str:
    """Store ``pending`` in ``directory`` (the inviting node) and return its token."""
    store = Store(directory)
    nid, label = store.network()
    node_key = _node_key(directory)
    store.signer(node_key, time.time())  # only an owner or admin can invite
    peer = identity.peer_id(node_key)
    if addrs is None:
        addrs = _own_addrs(directory, peer)
    token = invite.encode_token(invite.Invite(nid, peer.to_bytes(), tuple(addrs), pending.secret, pending.expires,
                                              label))
    with store.lock():
        store.save_invite(invite.invite_id(pending.secret), pending)
    return token


def invite_cmd(
    directory: DirOpt = Path("/etc/p2pvpn"), name: NameOpt = None, roles: RolesOpt = None, groups: GroupsOpt = None,
    uses: Annotated[int, typer.Option("--uses", help="How many nodes may join with this token.")] = 1,
    expires: ExpiresOpt = None, as_json: JsonOpt = False,
) -> None:
    """Print a one-line invite token; this node (running `up`) admits whoever redeems it."""
    if not 1 <= uses <= 1000:
        raise MembershipError("--uses must be 1..1000")
    lifetime = parse_duration(expires) if expires else invite.DEFAULT_EXPIRY
    pending = invite.Pending(secret=secrets.token_bytes(invite.SECRET_LEN), expires=int(time.time()) + lifetime,
                             uses=uses, name=name or "", roles=_roles(roles) or 0, groups=_groups(groups) or ())
    token = new_invite(directory, pending)
    nid, _ = Store(directory).network()
    if as_json:
        print(json.dumps({"token": token, "network_id": nid, "expires": pending.expires, "uses": uses,
                          "name": pending.name, "roles": roles_to_names(pending.roles),
                          "groups": list(pending.groups)}))
    else:
        print(token)


def join_cmd(
    token: Annotated[str, typer.Argument(help="An invite token (p2pvpn-invite1:...) or a certificate (p2pvpn-cert1:...).")],
    directory: DirOpt = Path("/etc/p2pvpn"),
    bootstrap: Annotated[Optional[list[str]], typer.Option("--bootstrap", help="With a certificate: a member's address, .../p2p/<peer-id>.")] = None,
) -> None:
    """Join a network with an invite token (asks the inviter) or with a certificate from `admit`."""
    text = token.strip()
    if text.startswith(cert.TEXT_PREFIX):
        _join_with_certificate(directory, cert.from_text(text), bootstrap or [])
    elif text.startswith(invite.TOKEN_PREFIX):
        if bootstrap:
            raise MembershipError("--bootstrap goes with a certificate; an invite brings its own")
        _join_with_invite(directory, invite.parse_token(text))
    else:
        raise MembershipError(f"expected an invite token ({invite.TOKEN_PREFIX}...) or a certificate "
                              f"({cert.TEXT_PREFIX}...)")


def _check_joinable(store: Store, nid: str) -> None:
    if store.exists():
        current, label = store.network()
        if current != nid:
            raise MembershipError(f"this node is already in network {current} ({label}); use another --dir")


def _accept(directory: Path, nid: str, label: str, data: bytes, revocations: bytes, bootstrap: list[str]) -> None:
    """Verify our certificate, then write the membership files and config (nothing is written on failure)."""
    node_key = _node_key(directory, create=True)
    peer = identity.peer_id(node_key)
    now = time.time()
    rset = RevocationSet(nid)
    if revocations:
        rset.merge_bytes(revocations, now)
    c = cert.verify(data, nid, now, rset.entries, peer.to_bytes())
    for addr in bootstrap:
        config.split_peer_addr(addr, key="bootstrap")
    store = Store(directory)
    with store.lock():
        if store.exists():  # joining again (a new certificate): keep what we knew
            known = store.revocations()
            if rset.best is not None:
                known.merge(rset.best)
            rset = known
        store.create(nid, label)
        store.save_certificate(data)
        store.save_revocations(rset)
    values: dict[str, str | list[str]] = {"network": nid}
    if bootstrap:
        values["bootstrap"] = bootstrap
    set_config(directory, **values)
    out.print(f"joined network {label or nid} ({nid}) as {c.name!r}: {c.ipv4}, {c.ipv6}, roles "
              f"{','.join(roles_to_names(c.roles)) or '-'}, valid until {_when(c.not_after)}", highlight=False)
    out.print(f"next: p2pvpn up --dir {directory}", highlight=False)


def _join_with_certificate(directory: Path, data: bytes, bootstrap: list[str]) -> None:
    try:
        body = pb.Certificate.FromString(pb.SignedCertificate.FromString(data).certificate)
    except Exception:  # protobuf raises DecodeError and friends; verify() below gives the precise reason
        raise MembershipError("the certificate is not readable") from None
    nid = body.network_id
    store = Store(directory)
    _check_joinable(store, nid)
    label = store.network()[1] if store.exists() else ""
    _accept(directory, nid, label, data, b"", bootstrap)


def _join_with_invite(directory: Path, token: invite.Invite) -> None:
    import trio

    from p2pvpn.host import Host
    from p2pvpn.membership.join import redeem

    now = time.time()
    if now >= token.expires:
        raise MembershipError(f"the invite expired at {_when(token.expires)}")
    store = Store(directory)
    _check_joinable(store, token.network_id)
    node_key = _node_key(directory, create=True)
    peer = identity.peer_id(node_key)
    if peer.to_bytes() == token.inviter:
        raise MembershipError("this node is the inviter; redeem the token on another node")
    inviter = _peer_text(token.inviter)

    async def ask() -> invite.JoinAnswer:
        host = Host(node_key, ["/ip4/127.0.0.1/tcp/0"])  # dial-out only; loopback so nothing is exposed
        async with host.running():
            return await redeem(host, token, peer)

    try:
        answer = trio.run(ask)
    except P2pvpnError:
        raise
    except trio.TooSlowError:
        raise MembershipError(f"the inviter {inviter} did not answer in time (is it running 'p2pvpn up'?)") from None
    except Exception as exc:  # dial and stream errors of py-libp2p come in many types
        raise MembershipError(f"cannot reach the inviter {inviter}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'unreachable'}") from None
    if answer.status is not invite.JoinStatus.OK:
        reason = {invite.JoinStatus.EXPIRED: "the invite has expired", invite.JoinStatus.USED_UP:
                  "the invite was already used", invite.JoinStatus.UNKNOWN_INVITE: "the inviter does not know this "
                  "invite"}.get(answer.status, answer.status.name.lower().replace("_", " "))
        raise MembershipError(f"invite refused: {reason}" + (f" ({answer.message})" if answer.message else ""))
    bootstrap = [str(multiaddr.Multiaddr(b)) for b in answer.bootstrap]
    if not bootstrap:
        bootstrap = [f"{multiaddr.Multiaddr(a)}/p2p/{inviter}" for a in token.addrs]
    _accept(directory, token.network_id, answer.network_name or token.network_name, answer.certificate,
            answer.revocations, bootstrap)


def admit_cmd(
    peer_id: Annotated[str, typer.Argument(help="The new member's peer ID (p2pvpn id --dir on its host).")],
    directory: DirOpt = Path("/etc/p2pvpn"), name: NameOpt = None, roles: RolesOpt = None, groups: GroupsOpt = None,
    expires: ExpiresOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Move NAME and its addresses from its current holder (key rotation); revokes the old peer.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a certificate for PEER_ID, offline; the member runs `p2pvpn join CERT`."""
    peer = _parse_peer(peer_id)
    if peer is None or len(peer) != 38:
        raise MembershipError(f"{peer_id!r} is not an Ed25519 peer ID (12D3KooW...)")
    store = Store(directory)
    nid, _ = store.network()
    node_key = _node_key(directory)
    now = time.time()
    with store.lock():
        signer = store.signer(node_key, now)
        rset = store.revocations()
        admission = authority.admit(signer, nid, peer, issued=store.issued(), revoked=rset.entries, now=now,
                                    name=name or "", roles=_roles(roles), groups=_groups(groups),
                                    lifetime=parse_duration(expires) if expires else None, replace=replace)
        store.save_issued(admission.certificate)
        if admission.replaces is not None:
            rset.publish(signer, now, {admission.replaces: int(now) + 1})
            store.save_revocations(rset)
    c = cert.open_certificate(admission.certificate, nid)
    text = cert.to_text(admission.certificate)
    if as_json:
        print(json.dumps({"certificate": text, **_member_json(c, rset, set()),
                          "replaces": _peer_text(admission.replaces) if admission.replaces else None}))
    else:
        print(text)


def _member_json(c: Certificate, rset: RevocationSet, online: set[str]) -> dict[str, Any]:
    peer = _peer_text(c.peer_id)
    return {"peer_id": peer, "name": c.name, "ipv4": str(c.ipv4), "ipv6": str(c.ipv6),
            "roles": roles_to_names(c.roles), "groups": list(c.groups), "expires": c.not_after,
            "revoked": cert.is_revoked(c, rset.entries), "online": peer in online}


def known_members(store: Store, presented: Sequence[str] = ()) -> list[Certificate]:
    """The newest certificate per peer among those this node issued, its own, and ``presented`` (texts)."""
    certs = store.issued()
    own = store.certificate()
    if own is not None:
        certs.append(own)
    nid, _ = store.network()
    for text in presented:
        try:
            certs.append(cert.open_certificate(cert.from_text(text), nid))
        except MembershipError:
            continue  # a certificate the node accepted earlier and that no longer parses: not a member
    newest: dict[bytes, Certificate] = {}
    for c in certs:
        if c.peer_id not in newest or c.not_before > newest[c.peer_id].not_before:
            newest[c.peer_id] = c
    return sorted(newest.values(), key=lambda c: (c.name, c.peer_id))


def members_cmd(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """List the members this node knows, with their addresses, roles, expiry, revocation and presence."""
    store = Store(directory)
    store.network()
    rset = store.revocations()
    reply = _running_reply(directory, "peers") or {}
    online = {p["peer_id"] for p in reply.get("peers", []) if p.get("state") == "up"}
    own = store.certificate()
    if own is not None and reply:
        online.add(_peer_text(own.peer_id))  # the node answering is online
    presented = (_running_reply(directory, "members") or {}).get("certificates", []) if reply else []
    rows = [_member_json(c, rset, online) for c in known_members(store, presented)]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"members of {store.network()[1] or store.network()[0]}")
    for col in ("name", "peer", "ipv4", "ipv6", "roles", "groups", "expires", "state"):
        table.add_column(col)
    for r in rows:
        state = "revoked" if r["revoked"] else ("online" if r["online"] else "-")
        table.add_row(r["name"], f"{r['peer_id'][:8]}…{r['peer_id'][-6:]}", r["ipv4"], r["ipv6"],
                      ",".join(r["roles"]) or "-", ",".join(r["groups"]) or "-", _when(r["expires"]), state)
    out.print(table)


def revoke_cmd(
    who: Annotated[str, typer.Argument(help="The member's peer ID or name.")], directory: DirOpt = Path("/etc/p2pvpn"),
) -> None:
    """Revoke a member by peer ID: every certificate it holds now becomes void."""
    store = Store(directory)
    nid, _ = store.network()
    node_key = _node_key(directory)
    now = time.time()
    with store.lock():
        members = known_members(store)
        peer = _parse_peer(who)
        if peer is None:
            named = [c for c in members if c.name == who]
            if not named:
                raise MembershipError(f"no member named {who!r} and not a peer ID (p2pvpn members --dir {directory})")
            peer = max(named, key=lambda c: c.not_before).peer_id
        if peer == identity.peer_id(node_key).to_bytes():
            raise MembershipError("refusing to revoke this node itself")
        signer = store.signer(node_key, now)
        rset = store.revocations()
        rset.publish(signer, now, {peer: int(now) + 1})
        store.save_revocations(rset)
    name = next((c.name for c in members if c.peer_id == peer), "")
    out.print(f"revoked {_peer_text(peer)}{f' ({name})' if name else ''}: revocation list {rset.seq} holds "
              f"{len(rset.entries)} entries", highlight=False)


def _when(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))

