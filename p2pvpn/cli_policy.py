"""``p2pvpn policy set FILE`` and ``p2pvpn policy show [--json]`` (docs/protocol.md §17).

``set`` signs the file's rules with the owner key (or this node's admin
certificate), numbered above the policy the directory holds, and stores it
in ``<dir>/membership/policy``; a node running on the directory picks it up
within a second and pushes it to every member. ``show`` prints the policy
the directory holds, which the running node keeps current.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from libp2p.peer.id import ID

from p2pvpn import identity
from p2pvpn.membership.store import Store
from p2pvpn.policy import store, text
from p2pvpn.policy.model import sign_policy

policy_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="The network's access policy: who may open which flows to whom.")

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, membership/).")]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@policy_app.command("set")
def set_cmd(file: Annotated[Path, typer.Argument(help="The policy in text form (TOML, see README).")],
            directory: DirOpt = Path("/etc/p2pvpn")) -> None:
    """Sign the policy in FILE and store it; a node running on the directory spreads it within seconds."""
    default, rules = text.parse_file(file)
    members = Store(directory)
    nid, _ = members.network()
    node_key = identity.load(directory / identity.KEY_FILE)
    with members.lock():
        signer = members.signer(node_key, time.time())
        current = store.load(directory, nid)
        seq = (current.seq if current is not None else 0) + 1
        data = sign_policy(signer, nid, seq, default, rules)
        store.save(directory, data)
    typer.echo(f"policy {seq} stored: default {default.name.lower()}, {len(rules)} rules")


@policy_app.command("show")
def show_cmd(directory: DirOpt = Path("/etc/p2pvpn"),
             as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Print the network policy this directory holds (allow-all when there is none)."""
    nid, _ = Store(directory).network()
    policy = store.load(directory, nid)
    if as_json:
        if policy is None:
            typer.echo(json.dumps({"seq": 0, "default": "allow", "rules": [], "signer": None}))
            return
        signer = ID(policy.admin.peer_id).to_base58() if policy.admin is not None else "owner"
        typer.echo(json.dumps({"seq": policy.seq, "default": policy.default.name.lower(),
                               "rules": [text.rule_dict(r) for r in policy.rules], "signer": signer}))
        return
    if policy is None:
        typer.echo("# no policy: every member may reach every member (default allow)")
        typer.echo(text.format_policy(text.Action.ALLOW, []), nl=False)
        return
    signer = f"admin {ID(policy.admin.peer_id).to_base58()}" if policy.admin is not None else "the owner"
    typer.echo(f"# policy {policy.seq}, signed by {signer}")
    typer.echo(text.format_policy(policy.default, policy.rules), nl=False)
