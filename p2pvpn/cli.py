"""The ``p2pvpn`` command line. Every P2pvpnError becomes one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import trio
import typer
from rich.console import Console
from rich.table import Table

from p2pvpn import addressing, config, identity
from p2pvpn.control import client
from p2pvpn.errors import P2pvpnError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A peer-to-peer VPN on libp2p.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, even when stderr is not a terminal

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, config.toml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _help(name: str) -> str:
    return config.field_doc(name)


@app.command()
def init(directory: DirOpt = Path("/etc/p2pvpn")) -> None:
    """Create an identity key (mode 0600) and a commented config.toml."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pair = identity.create(directory / identity.KEY_FILE)
    cfg_path = directory / config.CONFIG_FILE
    if not cfg_path.exists():
        cfg_path.write_text(config.template())
    pid = identity.peer_id(key_pair)
    out.print(f"created {directory / identity.KEY_FILE} for peer [bold]{pid}[/bold]")
    out.print(f"edit {cfg_path}, then run: p2pvpn up --dir {directory}")


@app.command("id")
def show_id(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """Print this node's peer ID and overlay addresses."""
    cfg = config.load(directory)
    pid = identity.peer_id(identity.load(directory / identity.KEY_FILE))
    addrs = addressing.derive(pid.to_bytes(), cfg.network)
    info = {"peer_id": str(pid), "ipv4": str(addrs.ipv4), "ipv6": str(addrs.ipv6), "network": cfg.network}
    if as_json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            out.print(f"{key:8} {value}")


@app.command()
def up(
    directory: DirOpt = Path("/etc/p2pvpn"),
    listen: Annotated[Optional[list[str]], typer.Option("--listen", help=_help("listen"))] = None,
    peer: Annotated[Optional[list[str]], typer.Option("--peer", help=_help("peers"))] = None,
    bootstrap: Annotated[Optional[list[str]], typer.Option("--bootstrap", help=_help("bootstrap"))] = None,
    dht: Annotated[Optional[str], typer.Option("--dht", help=_help("dht"))] = None,
    mdns: Annotated[Optional[bool], typer.Option("--mdns/--no-mdns", help=_help("mdns"))] = None,
    announce: Annotated[Optional[list[str]], typer.Option("--announce", help=_help("announce"))] = None,
    record_ttl: Annotated[Optional[float], typer.Option("--record-ttl", help=_help("record_ttl"))] = None,
    discovery_interval: Annotated[Optional[float], typer.Option("--discovery-interval", help=_help("discovery_interval"))] = None,
    trust_members: Annotated[Optional[bool], typer.Option("--trust-members/--no-trust-members", help=_help("trust_members"))] = None,
    allow_peer: Annotated[Optional[list[str]], typer.Option("--allow-peer", help=_help("allow_peers"))] = None,
    allow_any_peer: Annotated[Optional[bool], typer.Option("--allow-any-peer/--no-allow-any-peer", help=_help("allow_any_peer"))] = None,
    network: Annotated[Optional[str], typer.Option("--network", help=_help("network"))] = None,
    tun: Annotated[Optional[str], typer.Option("--tun", help=_help("tun"))] = None,
    mtu: Annotated[Optional[int], typer.Option("--mtu", help=_help("mtu"))] = None,
    offload: Annotated[Optional[bool], typer.Option("--offload/--no-offload", help=_help("offload"))] = None,
    queue_packets: Annotated[Optional[int], typer.Option("--queue-packets", help=_help("queue_packets"))] = None,
    keepalive: Annotated[Optional[float], typer.Option("--keepalive", help=_help("keepalive"))] = None,
    control_socket: Annotated[Optional[str], typer.Option("--control-socket", help=_help("control_socket"))] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help=_help("log_level"))] = None,
) -> None:
    """Run the node in the foreground until SIGINT or SIGTERM."""
    cfg = config.load(
        directory,
        listen=listen or None, peers=peer or None, allow_peers=allow_peer or None, allow_any_peer=allow_any_peer,
        bootstrap=bootstrap or None, dht=dht, mdns=mdns, announce=announce or None, record_ttl=record_ttl,
        discovery_interval=discovery_interval, trust_members=trust_members,
        network=network, tun=tun, mtu=mtu, offload=offload, queue_packets=queue_packets, keepalive=keepalive,
        control_socket=control_socket, log_level=log_level,
    )
    _setup_logging(cfg.log_level)
    key_pair = identity.load(directory / identity.KEY_FILE)
    from p2pvpn.node import Node

    node = Node(cfg, key_pair, directory)
    trio.run(_run_until_signal, node)


async def _run_until_signal(node: Any) -> None:
    from p2pvpn.node import raise_user_error

    try:
        await _run_node(node)
    except BaseExceptionGroup as group:
        raise_user_error(group)
        raise


async def _run_node(node: Any) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(node.run)
            async for signum in signals:
                logging.getLogger("p2pvpn").info("%s received, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


@app.command()
def status(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """Show the running node: identity, addresses, drops and peers."""
    reply = client.request(_control_path(directory), "status")
    if as_json:
        print(json.dumps(reply))
        return
    table = Table(show_header=False, box=None)
    for key in ("peer_id", "network", "ipv4", "ipv6", "tun", "mtu", "uptime"):
        table.add_row(key, str(reply.get(key)))
    table.add_row("listen", "\n".join(reply.get("listen", [])))
    table.add_row("drops", _fmt_counts(reply.get("drops", {})))
    disc = reply.get("discovery")
    if disc:
        table.add_row(
            "discovery",
            f"dht {disc['dht_mode']}, {disc['members']} members, routing table {disc['routing_table']}, "
            f"{disc['rejected_records']} records rejected",
        )
    out.print(table)
    out.print(_peers_table(reply.get("peers", [])))


@app.command()
def peers(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """List peers with state, path, transport, traffic and drops."""
    reply = client.request(_control_path(directory), "peers")
    if as_json:
        print(json.dumps(reply))
        return
    out.print(_peers_table(reply.get("peers", [])))


@app.command()
def lab(
    nodes: Annotated[int, typer.Option("--nodes", min=3, max=12, help="How many nodes to start.")] = 3,
    keep: Annotated[float, typer.Option("--keep", help="Seconds to keep the lab up after the checks.")] = 0.0,
) -> None:
    """Demo: build namespaces on this host, start a node in each, ping across the overlay, tear down."""
    from p2pvpn.lab.demo import run_lab

    code = run_lab(nodes=nodes, keep=keep, console=out)
    raise typer.Exit(code)


def _control_path(directory: Path) -> Path:
    from p2pvpn.node import control_path

    return control_path(config.load(directory), directory)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "-"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def _peers_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(title="peers")
    for col in ("peer", "overlay", "state", "path", "rtt", "in", "out", "drops"):
        table.add_column(col)
    now = time.time()
    for p in peers:
        since = now - float(p.get("since") or now)
        path = " ".join(str(x) for x in (p.get("path"), p.get("transport"), p.get("remote")) if x) or "-"
        rtt = f"{p['rtt_ms']:.1f} ms" if p.get("rtt_ms") is not None else "-"
        learned = str(p.get("learned_from", ""))
        if p.get("roles"):
            learned += " " + ",".join(p["roles"])
        if p.get("record_age") is not None:
            learned += f" rec {p['record_age']:.0f}s"
        table.add_row(
            f"{p['peer_id'][:8]}…{p['peer_id'][-6:]}\n[dim]{learned}[/dim]",
            f"{p['ipv4']}\n{p['ipv6']}",
            f"{p['state']}\n[dim]{since:.0f} s[/dim]",
            path,
            rtt,
            f"{_fmt_bytes(p['bytes_in'])}\n{p['packets_in']} pkts",
            f"{_fmt_bytes(p['bytes_out'])}\n{p['packets_out']} pkts",
            _fmt_counts(p.get("drops", {})),
        )
    return table


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":
        for noisy in ("libp2p", "multiaddr", "aioquic", "pyroute2"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main() -> None:
    try:
        sys.exit(app(standalone_mode=False) or 0)  # without standalone mode click returns typer.Exit codes
    except P2pvpnError as exc:
        err.print(f"p2pvpn: error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("p2pvpn: aborted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except __import__("click").ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PermissionError as exc:
        err.print(f"p2pvpn: error: permission denied: {exc.filename or exc}", markup=False)
        sys.exit(1)
