"""The ``p2pvpn`` command line. Every P2pvpnError becomes one line on stderr and a non-zero exit."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from p2pvpn import addressing, config
from p2pvpn.control import client
from p2pvpn.errors import P2pvpnError

# A bug's traceback stays plain: typer's pretty tracebacks would print local variables (key material among them).
app = typer.Typer(add_completion=False, no_args_is_help=True, help="A peer-to-peer VPN on libp2p.",
                  pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, even when stderr is not a terminal

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="Node directory (identity.key, config.toml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _help(name: str) -> str:
    return config.field_doc(name)


# Flags shared by `up` and `relay` (NAT traversal and the relay role).
ReachabilityOpt = Annotated[Optional[str], typer.Option("--reachability", help=_help("reachability"))]
RelayMaxReservationsOpt = Annotated[Optional[int], typer.Option("--relay-max-reservations", help=_help("relay_max_reservations"))]
RelayMaxCircuitsOpt = Annotated[Optional[int], typer.Option("--relay-max-circuits", help=_help("relay_max_circuits"))]
RelayMaxCircuitsPerPeerOpt = Annotated[Optional[int], typer.Option("--relay-max-circuits-per-peer", help=_help("relay_max_circuits_per_peer"))]
RelayMemberDurationOpt = Annotated[Optional[int], typer.Option("--relay-member-duration", help=_help("relay_member_duration"))]
RelayMemberBytesOpt = Annotated[Optional[int], typer.Option("--relay-member-bytes", help=_help("relay_member_bytes"))]
RelayStrangerDurationOpt = Annotated[Optional[int], typer.Option("--relay-stranger-duration", help=_help("relay_stranger_duration"))]
RelayStrangerBytesOpt = Annotated[Optional[int], typer.Option("--relay-stranger-bytes", help=_help("relay_stranger_bytes"))]
RelayServeStrangersOpt = Annotated[Optional[bool], typer.Option("--relay-serve-strangers/--no-relay-serve-strangers", help=_help("relay_serve_strangers"))]


def _with_limit_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Add a ``--limit-*`` flag per ``limit_*`` config key (documented once, in p2pvpn.config).

    The command receives their values as one dict, ``limits``.
    """
    names = [n for n in config.FIELDS if n.startswith("limit_")]
    base = inspect.signature(command, eval_str=True)
    params = [p for p in base.parameters.values() if p.name != "limits"]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[int], typer.Option("--" + n.replace("_", "-"), help=_help(n))]) for n in names]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        limits = {n: kwargs.pop(n, None) for n in names}
        command(*args, limits=limits, **kwargs)

    wrapper.__signature__ = base.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


@app.command()
def init(directory: DirOpt = Path("/etc/p2pvpn")) -> None:
    """Create an identity key (mode 0600) and a commented config.toml."""
    from p2pvpn import identity  # imports libp2p: only where needed

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
    from p2pvpn import identity  # imports libp2p: only where needed

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
@_with_limit_flags
def up(
    directory: DirOpt = Path("/etc/p2pvpn"),
    listen: Annotated[Optional[list[str]], typer.Option("--listen", help=_help("listen"))] = None,
    peer: Annotated[Optional[list[str]], typer.Option("--peer", help=_help("peers"))] = None,
    bootstrap: Annotated[Optional[list[str]], typer.Option("--bootstrap", help=_help("bootstrap"))] = None,
    dht: Annotated[Optional[str], typer.Option("--dht", help=_help("dht"))] = None,
    mdns: Annotated[Optional[bool], typer.Option("--mdns/--no-mdns", help=_help("mdns"))] = None,
    dns: Annotated[Optional[bool], typer.Option("--dns/--no-dns", help=_help("dns"))] = None,
    dns_suffix: Annotated[Optional[str], typer.Option("--dns-suffix", help=_help("dns_suffix"))] = None,
    dns_label: Annotated[Optional[str], typer.Option("--dns-label", help=_help("dns_label"))] = None,
    dns_resolved: Annotated[Optional[bool], typer.Option("--dns-resolved/--no-dns-resolved", help=_help("dns_resolved"))] = None,
    announce: Annotated[Optional[list[str]], typer.Option("--announce", help=_help("announce"))] = None,
    record_ttl: Annotated[Optional[float], typer.Option("--record-ttl", help=_help("record_ttl"))] = None,
    discovery_interval: Annotated[Optional[float], typer.Option("--discovery-interval", help=_help("discovery_interval"))] = None,
    allow_peer: Annotated[Optional[list[str]], typer.Option("--allow-peer", help=_help("allow_peers"))] = None,
    # Removed flags, hidden: given anyway, they say what replaced them (config.REMOVED) instead of "no such option".
    trust_members: Annotated[Optional[str], typer.Option("--trust-members", hidden=True)] = None,
    allow_any_peer: Annotated[Optional[bool], typer.Option("--allow-any-peer/--no-allow-any-peer", hidden=True)] = None,
    network: Annotated[Optional[str], typer.Option("--network", help=_help("network"))] = None,
    tun: Annotated[Optional[str], typer.Option("--tun", help=_help("tun"))] = None,
    mtu: Annotated[Optional[int], typer.Option("--mtu", help=_help("mtu"))] = None,
    offload: Annotated[Optional[bool], typer.Option("--offload/--no-offload", help=_help("offload"))] = None,
    udp: Annotated[Optional[bool], typer.Option("--udp/--no-udp", help=_help("udp"))] = None,
    queue_packets: Annotated[Optional[int], typer.Option("--queue-packets", help=_help("queue_packets"))] = None,
    keepalive: Annotated[Optional[float], typer.Option("--keepalive", help=_help("keepalive"))] = None,
    control_socket: Annotated[Optional[str], typer.Option("--control-socket", help=_help("control_socket"))] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help=_help("log_level"))] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", metavar="ADDR:PORT", help=_help("metrics"))] = None,
    metrics_public: Annotated[Optional[bool], typer.Option("--metrics-public/--no-metrics-public", help=_help("metrics_public"))] = None,
    reachability: ReachabilityOpt = None,
    hole_punch: Annotated[Optional[bool], typer.Option("--hole-punch/--no-hole-punch", help=_help("hole_punch"))] = None,
    relay_reservations: Annotated[Optional[int], typer.Option("--relay-reservations", help=_help("relay_reservations"))] = None,
    static_relay: Annotated[Optional[list[str]], typer.Option("--static-relay", help=_help("static_relays"))] = None,
    relay: Annotated[Optional[bool], typer.Option("--relay/--no-relay", help=_help("relay"))] = None,
    relay_max_reservations: RelayMaxReservationsOpt = None,
    relay_max_circuits: RelayMaxCircuitsOpt = None,
    relay_max_circuits_per_peer: RelayMaxCircuitsPerPeerOpt = None,
    relay_member_duration: RelayMemberDurationOpt = None,
    relay_member_bytes: RelayMemberBytesOpt = None,
    relay_stranger_duration: RelayStrangerDurationOpt = None,
    relay_stranger_bytes: RelayStrangerBytesOpt = None,
    relay_serve_strangers: RelayServeStrangersOpt = None,
    exit: Annotated[Optional[bool], typer.Option("--exit/--no-exit", help=_help("exit"))] = None,
    exit_allow: Annotated[Optional[list[str]], typer.Option("--exit-allow", help=_help("exit_allow"))] = None,
    exit_deny: Annotated[Optional[list[str]], typer.Option("--exit-deny", help=_help("exit_deny"))] = None,
    exit_capacity_mbit: Annotated[Optional[int], typer.Option("--exit-capacity-mbit", help=_help("exit_capacity_mbit"))] = None,
    exit_client_rate_mbit: Annotated[Optional[int], typer.Option("--exit-client-rate-mbit", help=_help("exit_client_rate_mbit"))] = None,
    use_exit: Annotated[Optional[str], typer.Option("--use-exit", help=_help("use_exit"))] = None,
    exit_via: Annotated[Optional[str], typer.Option("--exit-via", help=_help("exit_via"))] = None,
    limits: Optional[dict[str, Optional[int]]] = None,
) -> None:
    """Run the node in the foreground until SIGINT or SIGTERM."""
    from p2pvpn import identity  # imports libp2p: only where needed

    for flag, value in (("trust_members", trust_members), ("allow_any_peer", allow_any_peer)):
        if value is not None:
            raise config.removed(flag)
    cfg = config.load(directory, **(overrides := dict(
        listen=listen or None, peers=peer or None, allow_peers=allow_peer or None,
        bootstrap=bootstrap or None, dht=dht, mdns=mdns, announce=announce or None, record_ttl=record_ttl,
        discovery_interval=discovery_interval, dns=dns, dns_suffix=dns_suffix, dns_label=dns_label,
        dns_resolved=dns_resolved,
        network=network, tun=tun, mtu=mtu, offload=offload, udp=udp, queue_packets=queue_packets, keepalive=keepalive,
        control_socket=control_socket, log_level=log_level,
        reachability=reachability, hole_punch=hole_punch, relay_reservations=relay_reservations,
        static_relays=static_relay or None, relay=relay,
        relay_max_reservations=relay_max_reservations, relay_max_circuits=relay_max_circuits,
        relay_max_circuits_per_peer=relay_max_circuits_per_peer, relay_member_duration=relay_member_duration,
        relay_member_bytes=relay_member_bytes, relay_stranger_duration=relay_stranger_duration,
        relay_stranger_bytes=relay_stranger_bytes, relay_serve_strangers=relay_serve_strangers,
        exit=exit, exit_allow=exit_allow or None, exit_deny=exit_deny or None,
        exit_capacity_mbit=exit_capacity_mbit, exit_client_rate_mbit=exit_client_rate_mbit,
        use_exit=use_exit, exit_via=exit_via, metrics=metrics, metrics_public=metrics_public, **(limits or {}),
    )))
    # The node runs without typer/rich (p2pvpn.node_process); it sets up logging and loads the key there: both
    # import py-libp2p and trio, which this process then need not (start-up CPU).
    _hand_over("up", cfg, directory, overrides, "stderr")
    _setup_logging(cfg.log_level)
    key_pair = identity.load(directory / identity.KEY_FILE)
    from p2pvpn.node import Node

    node = Node(cfg, key_pair, directory)
    node.start_overrides = overrides  # a reload (SIGHUP) merges config.toml with the same flags
    import trio

    trio.run(_run_until_signal, node)


@app.command("relay")
@_with_limit_flags
def relay_cmd(
    directory: DirOpt = Path("/var/lib/p2pvpn-relay"),
    listen: Annotated[Optional[list[str]], typer.Option("--listen", help=_help("listen"))] = None,
    announce: Annotated[Optional[list[str]], typer.Option("--announce", help=_help("announce"))] = None,
    bootstrap: Annotated[Optional[list[str]], typer.Option("--bootstrap", help=_help("bootstrap"))] = None,
    network: Annotated[Optional[str], typer.Option("--network", help=_help("network"))] = None,
    record_ttl: Annotated[Optional[float], typer.Option("--record-ttl", help=_help("record_ttl"))] = None,
    discovery_interval: Annotated[Optional[float], typer.Option("--discovery-interval", help=_help("discovery_interval"))] = None,
    reachability: ReachabilityOpt = None,
    relay_max_reservations: RelayMaxReservationsOpt = None,
    relay_max_circuits: RelayMaxCircuitsOpt = None,
    relay_max_circuits_per_peer: RelayMaxCircuitsPerPeerOpt = None,
    relay_member_duration: RelayMemberDurationOpt = None,
    relay_member_bytes: RelayMemberBytesOpt = None,
    relay_stranger_duration: RelayStrangerDurationOpt = None,
    relay_stranger_bytes: RelayStrangerBytesOpt = None,
    relay_serve_strangers: RelayServeStrangersOpt = None,
    control_socket: Annotated[Optional[str], typer.Option("--control-socket", help=_help("control_socket"))] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help=_help("log_level"))] = None,
    limits: Optional[dict[str, Optional[int]]] = None,
) -> None:
    """Run a headless relay and DHT server (no TUN, no root); logs to stdout for journald.

    The identity key is created in --dir on first start. Share the printed
    "share:" addresses with members: they use them as --bootstrap.
    `p2pvpn down --dir DIR`, SIGTERM or SIGINT stop it gracefully; `p2pvpn
    reload --dir DIR` or SIGHUP re-read config.toml's relay_* limits and
    bootstrap list, keeping the reservations held.
    """
    from p2pvpn import identity  # imports libp2p: only where needed

    cfg = config.load(directory, **(overrides := dict(
        listen=listen or None, announce=announce or None, bootstrap=bootstrap or None, network=network,
        record_ttl=record_ttl, discovery_interval=discovery_interval, reachability=reachability, relay=True,
        relay_max_reservations=relay_max_reservations, relay_max_circuits=relay_max_circuits,
        relay_max_circuits_per_peer=relay_max_circuits_per_peer, relay_member_duration=relay_member_duration,
        relay_member_bytes=relay_member_bytes, relay_stranger_duration=relay_stranger_duration,
        relay_stranger_bytes=relay_stranger_bytes, relay_serve_strangers=relay_serve_strangers,
        control_socket=control_socket, log_level=log_level, **(limits or {}),
    )))
    key_path = directory / identity.KEY_FILE
    if not key_path.exists():
        _setup_logging(cfg.log_level, stream=sys.stdout)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity.create(key_path)
        logging.getLogger("p2pvpn").info("created identity key %s", key_path)
    _hand_over("relay", cfg, directory, overrides, "stdout")  # as in `up`: logging and key in the node process
    _setup_logging(cfg.log_level, stream=sys.stdout)
    key_pair = identity.load(key_path)
    import trio

    from p2pvpn.relay_node import RelayNode

    node = RelayNode(cfg, key_pair, directory)
    node.start_overrides = overrides  # a reload (SIGHUP, `p2pvpn reload`) merges config.toml with the same flags
    trio.run(_run_until_signal, node)


async def _run_until_signal(node: Any) -> None:
    from p2pvpn.node_process import run_until_signal

    await run_until_signal(node)


def _hand_over(kind: str, cfg: config.Config, directory: Path, overrides: dict[str, Any], log_stream: str) -> None:
    """Exec the node process (p2pvpn.node_process); returns only when this is no `p2pvpn` process (tests)."""
    from p2pvpn import node_process

    node_process.hand_over(node_process.Handover(kind, cfg, directory, overrides, log_stream,
                                                 str(Path(__file__).resolve().parent)))


@app.command()
def status(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """Show the running node: identity, addresses, drops and peers."""
    reply = client.request(_control_path(directory), "status")
    if as_json:
        print(json.dumps(reply))
        return
    if reply.get("role") == "relay":
        out.print(_relay_status_table(reply))
        return
    table = Table(show_header=False, box=None)
    for key in ("peer_id", "network", "ipv4", "ipv6", "tun", "mtu", "uptime"):
        table.add_row(key, str(reply.get(key)))
    table.add_row("listen", "\n".join(reply.get("listen", [])))
    table.add_row("drops", _fmt_counts(reply.get("drops_total", reply.get("drops", {}))))
    table.add_row("failures", _fmt_counts(reply.get("failures", {})))
    disc = reply.get("discovery")
    if disc:
        table.add_row(
            "discovery",
            f"dht {disc['dht_mode']}, {disc['members']} members, routing table {disc['routing_table']}, "
            f"{disc['rejected_records']} records rejected",
        )
    nat = reply.get("nat")
    if nat:
        reach = nat["reachability"]
        slots = nat["relay_slots"]
        punch = nat["hole_punching"]
        table.add_row("reachability", f"{reach['status']}{' (configured)' if reach['forced'] else ''}")
        if slots["relays"]:
            table.add_row("relay slots", "\n".join(r["relay"] for r in slots["relays"]))
        table.add_row("hole punching", f"{punch['succeeded']} of {punch['attempts']} succeeded"
                      if punch["enabled"] else "off")
    if reply.get("relay"):
        table.add_row("relay role", _relay_summary(reply["relay"]))
    if reply.get("exit"):
        role = reply["exit"]
        counts = {name: c["packets"] for name, c in role["counters"].items()}
        table.add_row("exit role", f"table {role['table']}, load {role['load_permille']}‰, "
                      f"{role['throughput_mbit']} Mbit/s; packets: {_fmt_counts(counts)}")
    if reply.get("exit_client"):
        use = reply["exit_client"]
        table.add_row("using exit", f"{use['current'] or '-'} ({use['mode']}, {use['switches']} switches)")
    if (pol := reply.get("policy")) and pol["seq"]:  # docs/protocol.md §17.6
        table.add_row("policy", f"{pol['seq']}, default {pol['default']}, {pol['rules']} rules; {pol['denied']} denied "
                      f"({_fmt_counts(pol['denied_by_reason'])}); {pol['flows']} flows")
    out.print(table)
    out.print(_peers_table(reply.get("peers", [])))


def _relay_summary(relay: dict[str, Any]) -> str:
    return (f"{relay['reservations']} reservations ({relay['member_reservations']} members), "
            f"{relay['circuits']} circuits open, {relay['circuits_total']} carried, "
            f"{_fmt_bytes(relay['bytes_relayed'])} relayed; refused: {_fmt_counts(relay['refused'])}")


def _relay_status_table(reply: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, title="relay")
    for key in ("peer_id", "network", "uptime", "connected_peers"):
        table.add_row(key, str(reply.get(key)))
    table.add_row("share", "\n".join(reply.get("listen", [])))
    reach = reply.get("reachability") or {}
    table.add_row("reachability", str(reach.get("status")))
    disc = reply.get("discovery")
    if disc:
        table.add_row("dht", f"{disc['dht_mode']}, routing table {disc['routing_table']}, {disc['members']} members known")
    if reply.get("relay"):
        table.add_row("relay", _relay_summary(reply["relay"]))
    return table


@app.command()
def peers(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """List peers with state, path, transport, traffic and drops."""
    reply = client.request(_control_path(directory), "peers")
    if as_json:
        print(json.dumps(reply))
        return
    out.print(_peers_table(reply.get("peers", [])))


@app.command()
def exits(directory: DirOpt = Path("/etc/p2pvpn"), as_json: JsonOpt = False) -> None:
    """List the network's exits: policy, load, latency, score; the one in use is marked."""
    reply = client.request(_control_path(directory), "exits")
    if as_json:
        print(json.dumps(reply))
        return
    table = Table(title=f"exits (mode {reply.get('mode')})")
    for column in ("", "peer", "state", "path", "rtt ms", "load ‰", "capacity", "score"):
        table.add_column(column)
    table.add_column("policy", overflow="fold")
    for c in reply.get("candidates", []):
        pid = c["peer_id"]
        score = "-" if c["score"] is None else (f"{c['score']:.1f}" if c["available"] else f"- ({c['reason']})")
        policy = "allow " + ", ".join(c["allow"] or []) + ("\ndeny " + ", ".join(c["deny"]) if c["deny"] else "")
        table.add_row("*" if c["in_use"] else "", f"{pid[:8]}…{pid[-6:]}", c["state"],
                      f"{c['path'] or '-'}" + (f" via {c['relay'][:8]}…" if c.get("relay") else ""),
                      "-" if c["rtt_ms"] is None else str(c["rtt_ms"]), str(c["load_permille"]),
                      f"{c['capacity_mbit'] or '-'} Mbit/s", score, policy)
    out.print(table)


@app.command()
def lab(
    nodes: Annotated[int, typer.Option("--nodes", min=3, max=12, help="How many nodes to start.")] = 3,
    keep: Annotated[float, typer.Option("--keep", help="Seconds to keep the lab up after the checks.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout; the story goes to stderr.")] = False,
) -> None:
    """Demo: namespaces on this host; create a network, invite and join, ping across it, revoke one node, tear down."""
    from p2pvpn.lab.demo import run_lab

    if as_json:
        code = run_lab(nodes=nodes, keep=keep, console=Console(stderr=True),
                       summary=lambda s: print(json.dumps(s), flush=True))
    else:
        code = run_lab(nodes=nodes, keep=keep, console=out)
    raise typer.Exit(code)


from p2pvpn.cli_membership import register as _register_membership  # noqa: E402  network, invite, join, ...
from p2pvpn.cli_ops import register as _register_ops  # noqa: E402  down, reload

_register_membership(app)
_register_ops(app)
from p2pvpn.cli_policy import register as _register_policy  # noqa: E402  policy set, policy show

_register_policy(app)
from p2pvpn.cli_names import register as _register_names  # noqa: E402  ping, netcheck, names

_register_names(app)


def _control_path(directory: Path) -> Path:
    from p2pvpn.control.paths import find_control_path

    return find_control_path(config.load(directory), directory)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "-"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def _peers_table(peers: list[dict[str, Any]]) -> Table:
    from p2pvpn.cli_ops import peers_table  # fits 80 columns; names from certificates

    return peers_table(peers)


def _setup_logging(level: str, stream: Any = sys.stderr) -> None:
    """One line per record, ours and py-libp2p's, filtered by ``--log-level`` (p2pvpn.logs)."""
    from p2pvpn import logs

    logs.install(level, stream)


def _click_exception_class() -> type[Exception]:
    """Click's ``ClickException``, wherever this typer keeps click.

    typer up to 0.2x re-exported the ``click`` distribution; newer typer
    vendors its own copy (``typer._click``) and no longer installs click.
    Both raise ``typer.BadParameter``, whose bases include the class we
    want, so it is found without naming either module.
    """
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


_ClickException = _click_exception_class()


def _usage_error_line(exc: Exception) -> str:
    """``p2pvpn: error: No such option: --bogus (see 'p2pvpn up --help')``: one line for any usage error."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") if ctx is not None else ""
    hint = f" (see '{path} --help')" if path else ""
    return f"p2pvpn: error: {' '.join(message.split())}{hint}"


def main() -> None:
    """Entry point: every user error is one line on stderr and a non-zero exit; success exits 0."""
    from p2pvpn import node_process

    node_process.allowed = True  # `up` and `relay` may exec their node process
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
    except _ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `p2pvpn`: the help is the answer
            if exc.format_message().strip():
                exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        err.print(_usage_error_line(exc), highlight=False, markup=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except PermissionError as exc:
        err.print(f"p2pvpn: error: permission denied: {exc.filename or exc}", markup=False)
        sys.exit(1)
    except OSError as exc:  # a path that cannot be created or read, a full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"p2pvpn: error: {exc.strerror or exc}{where}", highlight=False, markup=False)
        sys.exit(1)
