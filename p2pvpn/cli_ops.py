"""Operator commands: ``p2pvpn down`` and ``reload``, the node's signal handling, the peers table.

Signals of a running ``p2pvpn up`` and ``p2pvpn relay``: SIGTERM or SIGINT
stop it gracefully (p2pvpn.ops: a node's tunnels closed with a Close frame,
then its TUN, routes and nft tables removed; a relay's circuits ended and
its connections closed, p2pvpn.relay_node), a second one or
:data:`STOP_DEADLINE` seconds without progress cancel at once; SIGHUP
reloads config.toml (a node's peer lists, a relay's limits and bootstrap
list). ``down`` and ``reload`` ask the same over the control socket.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from p2pvpn.control import client
from p2pvpn.errors import ControlError

log = logging.getLogger("p2pvpn")

DOWN_WAIT = 30.0      # seconds `p2pvpn down` waits for the node to be gone
NAME_WIDTH = 16       # peer names are cut beyond this, so the table fits 80 columns
STATES = {"connecting": "dialing"}  # short words keep the state column narrow


DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, config.toml).")]


def register(app: typer.Typer) -> None:

    @app.command()
    def down(directory: DirOpt = Path("/etc/p2pvpn")) -> None:
        """Stop the running node or relay of --dir (as SIGTERM does) and wait until it is gone.

        A node closes its tunnels with a Close frame and removes its TUN,
        routes and nft rules; a relay ends its circuits and closes its
        connections.
        """
        from p2pvpn.cli import out

        path = _control_path(directory)
        reply = client.request(path, "down")
        role = reply.get("role", "node")
        if not wait_gone(path, DOWN_WAIT):
            raise ControlError(f"the {role} at {path} did not stop within {DOWN_WAIT:.0f} s")
        out.print(f"stopped {role} {reply.get('peer_id', '')}", highlight=False)

    @app.command()
    def reload(directory: DirOpt = Path("/etc/p2pvpn")) -> None:
        """Re-read config.toml (as SIGHUP does); nothing changes if it is malformed.

        A node applies peers and allow_peers (tunnels of listed peers stay),
        a relay its relay_* limits and bootstrap list (reservations stay).
        """
        from p2pvpn.cli import out

        reply = client.request(_control_path(directory), "reload")
        later = f"; at the next start: {', '.join(reply['restart_needed'])}" if reply["restart_needed"] else ""
        if reply.get("role") == "relay":
            changed = f"{', '.join(reply['changed'])} changed" if reply["changed"] else "no relay setting changed"
            out.print(f"reloaded: {changed}, {reply['reservations_kept']} reservation(s) kept{later}",
                      highlight=False)
            return
        out.print(f"reloaded: {reply['added']} peer(s) added, {reply['removed']} removed, {reply['kept']} kept"
                  + later, highlight=False)


def _control_path(directory: Path) -> Path:
    from p2pvpn.cli import _control_path as find

    return find(directory)


def wait_gone(path: Path, timeout: float) -> bool:
    """Whether the node behind ``path`` went away in time: its socket removed, or refusing connections.

    Only connects, never asks: a request would race the control server's own shutdown (a reset).
    """
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):  # bounded in count and time
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return True
        except OSError:
            pass  # e.g. a full backlog while it stops: look again
        finally:
            probe.close()
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return False


# -- signals: p2pvpn.node_signals (no typer, no rich: the node process imports it) ------

from p2pvpn.node_signals import STOP_DEADLINE, run_node  # noqa: E402,F401  (re-exported)


# -- the peers table -------------------------------------------------------------------


def peers_table(peers: list[dict[str, Any]], now: float | None = None) -> Table:
    """Peers at 80 columns: name (or short ID), overlay IPv4, state, path, RTT, traffic, drops.

    One row of at most two lines per peer; the IPv6 and full peer ID are in ``--json``.
    """
    from p2pvpn.cli import _fmt_bytes, _fmt_counts

    now = time.time() if now is None else now
    # Widest cells: name 16, IPv4 15, "dialing" 7, "relay …abcdef" 13, "123.4ms" 7, "117.7 MiB" 9, drops 5,
    # plus one space between columns: 78.
    table = Table(title="peers", box=None, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False, title_justify="left")
    table.add_column("peer", no_wrap=True, max_width=NAME_WIDTH, overflow="ellipsis")
    table.add_column("overlay", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("path", no_wrap=True, max_width=13, overflow="ellipsis")
    table.add_column("rtt", justify="right", no_wrap=True)
    table.add_column("in/out", justify="right", no_wrap=True)
    table.add_column("drops", justify="right", no_wrap=True, max_width=6, overflow="ellipsis")
    for p in peers:
        pid = str(p["peer_id"])
        short = f"{pid[:4]}…{pid[-6:]}"
        name = p.get("name")
        since = now - float(p.get("since") or now)
        rtt = f"{p['rtt_ms']:.1f}ms" if p.get("rtt_ms") is not None else "-"
        drops = sum((p.get("drops") or {}).values())
        table.add_row(
            f"{name}\n[dim]{short}[/dim]" if name else f"{short}\n[dim]{p.get('learned_from', '')}[/dim]",
            str(p.get("ipv4")),
            f"{STATES.get(str(p.get('state')), p.get('state'))}\n[dim]{_age(since)}[/dim]",
            _path(p),
            rtt,
            f"{_fmt_bytes(int(p.get('bytes_in', 0)))}\n{_fmt_bytes(int(p.get('bytes_out', 0)))}",
            str(drops) if drops else "-",
        )
    return table


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _path(p: dict[str, Any]) -> str:
    """``direct tcp`` / ``relay …<relay ID tail>``, over ``udp`` datagrams or the ``stream``."""
    if not p.get("path"):
        return "-"
    if p.get("relay"):
        first = f"relay …{str(p['relay'])[-6:]}"
    else:
        first = " ".join(str(x) for x in (p.get("path"), p.get("transport")) if x)
    return f"{first}\n[dim]{'udp' if p.get('data_path') == 'udp' else 'stream'}[/dim]"
