"""``p2pvpn ping``, ``netcheck`` and ``names``: ask the running node over its control socket.

``ping TARGET`` sends one control request per probe (``ping TARGET``); the
node resolves the target (member name, peer ID, overlay address), sends one
echo on the path the peer's packets take now and answers with that path and
the round trip (p2pvpn.names.service). Exit status: 0 when any probe got a
reply, 1 when none did; a one-line error for an unknown target or when no
node runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from p2pvpn import config
from p2pvpn.control import client
from p2pvpn.errors import ConfigError

out = Console()
DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, config.toml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
MAX_COUNT = 1000
REQUEST_TIMEOUT = 8.0  # one probe waits at most 2 s in the node; netcheck's UDP probes 1 s


def _control_path(directory: Path) -> Path:
    from p2pvpn.node import find_control_path

    return find_control_path(config.load(directory), directory)


def _path_text(reply: dict[str, Any]) -> str:
    path = reply.get("path")
    if path == "udp":
        return f"datagram (udp {reply.get('endpoint') or '?'})"
    if path == "relayed":
        relay = reply.get("relay_name") or reply.get("relay") or "?"
        return f"relayed via {relay}"
    if path == "direct":
        return f"direct stream ({reply.get('transport') or 'tcp'} {reply.get('endpoint') or ''})".replace(" )", ")")
    return path or "-"


def ping_cmd(
    target: Annotated[str, typer.Argument(help="A member's name (alpha or alpha.lab.internal), a peer ID or an overlay IP.")],
    count: Annotated[int, typer.Option("--count", "-c", help="Probes to send, one a second.")] = 4,
    directory: DirOpt = Path("/etc/p2pvpn"),
    as_json: JsonOpt = False,
) -> None:
    """Probe a peer through the tunnel: the path each probe took (direct, datagram, relayed via whom) and its RTT."""
    if not 1 <= count <= MAX_COUNT:
        raise ConfigError(f"--count: {count} is out of range 1..{MAX_COUNT}")
    path = _control_path(directory)
    replies: list[dict[str, Any]] = []
    for i in range(count):
        started = time.monotonic()
        reply = client.request(path, f"ping {target}", timeout=REQUEST_TIMEOUT)
        replies.append(reply)
        if as_json:
            print(json.dumps({"seq": i + 1, **reply}), flush=True)
        else:
            label = reply.get("name") or reply.get("peer_id", "")[:16]
            if reply.get("reply"):
                out.print(f"{label} ({reply.get('ipv4')}): seq={i + 1} {_path_text(reply)} "
                          f"rtt={reply['rtt_ms']:.2f} ms", highlight=False)
            else:
                out.print(f"{label} ({reply.get('ipv4')}): seq={i + 1} no reply: {reply.get('problem')}",
                          highlight=False)
        if i + 1 < count:
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    rtts = [r["rtt_ms"] for r in replies if r.get("reply")]
    summary = {"sent": count, "received": len(rtts), "loss": round(1 - len(rtts) / count, 3),
               "min_ms": min(rtts) if rtts else None, "avg_ms": round(sum(rtts) / len(rtts), 3) if rtts else None,
               "max_ms": max(rtts) if rtts else None, "paths": sorted({_path_text(r) for r in replies if r.get("reply")})}
    if as_json:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        rtt = f", rtt min/avg/max {summary['min_ms']:.2f}/{summary['avg_ms']:.2f}/{summary['max_ms']:.2f} ms" if rtts else ""
        out.print(f"{target}: {count} sent, {len(rtts)} received, {summary['loss']:.0%} loss{rtt}", highlight=False)
    if not rtts:
        raise typer.Exit(1)


def netcheck_cmd(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """Reachability, NAT mapping, reserved relays, whether UDP gets through, and the exit in use."""
    reply = client.request(_control_path(directory), "netcheck", timeout=REQUEST_TIMEOUT)
    if as_json:
        print(json.dumps(reply))
        return
    udp = reply.get("udp") or {}
    through = {True: "yes", False: "no", None: "unknown (no direct tunnel with the datagram path)"}[udp.get("gets_through")]
    relays = ", ".join(r.get("name") or r["relay"][:16] for r in reply.get("relays", [])) or "none"
    exit_ = reply.get("exit")
    exit_text = "none" if not exit_ else ("this node is an exit" if exit_["mode"] == "serving" else
                                          f"{exit_.get('name') or exit_.get('current') or 'none yet'} ({exit_['mode']})")
    lines = [
        ("reachability", str(reply.get("reachability"))),
        ("NAT mapping", f"{reply.get('nat_mapping')}: {reply.get('nat_mapping_why')}"),
        ("observed as", ", ".join(sorted({o["external"] for o in reply.get("observed", [])})) or "-"),
        ("relays reserved", relays),
        ("UDP gets through", through if udp.get("enabled") else "datagram path off (udp = false)"),
        ("exit in use", exit_text),
    ]
    for key, value in lines:
        out.print(f"{key:<17} {value}", highlight=False, soft_wrap=True)
    for row in udp.get("peers", []):
        name = row.get("name") or row["peer_id"][:16]
        probe = f", probe {row['probe_rtt_ms']:.2f} ms" if row.get("probe_rtt_ms") is not None else ""
        out.print(f"  {name:<16} {row.get('path')}, data over {row.get('data_path') or 'stream'}{probe}",
                  highlight=False)


def names_cmd(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """The names this node's DNS responder answers, with their addresses."""
    reply = client.request(_control_path(directory), "names")
    if as_json:
        print(json.dumps(reply))
        return
    if reply.get("zone") is None:
        out.print("no names: this network has no owner (names come from membership certificates)")
        return
    table = Table(title=f"names in {reply['zone']}")
    for column in ("name", "ipv4", "ipv6", "peer"):
        table.add_column(column)
    for n in reply["names"]:
        table.add_row(n["fqdn"], n["ipv4"], n["ipv6"], n["peer_id"][:16] + "…")
    out.print(table)
    dns = reply.get("dns") or {}
    out.print(f"DNS on {', '.join(dns.get('listening', [])) or 'nothing'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``ping``, ``netcheck`` and ``names`` to the main ``p2pvpn`` app."""
    for command in (ping_cmd, netcheck_cmd, names_cmd):
        app.command(command.__name__.removesuffix("_cmd"))(command)
