"""``p2pvpn lab``, narrated: create a network, invite, join, ping, revoke, and check each step.

Theory of operation
-------------------
:class:`p2pvpn.lab.owned.OwnedLab` types the commands; this module tells the
story and judges it. The steps, each of which ends the lab with exit 1 if
it fails:

1. ``network create`` on n1 (the owner), ``up`` on n1;
2. for every other node nK, at once: ``invite --name nK`` on n1, then
   ``join TOKEN`` and ``up`` on nK (the owner is its only bootstrap); then a
   wait for the full mesh of tunnels;
3. echoes between every pair, over IPv4 and IPv6: all must be answered
   (``members --json`` on n1 runs meanwhile, for the table);
4. ``revoke`` of the last node on n1; every other node must drop its tunnel
   to it within 10 s of the revocation; echoes again: none to or from the
   revoked node may be answered, all among the others must be;
   ``members --json`` on n1 must list it as revoked;
5. teardown, also on failure, Ctrl-C or SIGTERM.

What happened is also kept as a summary (:class:`Report`), which
``p2pvpn lab --json`` prints on stdout while the story goes to stderr.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from p2pvpn.errors import P2pvpnError
from p2pvpn.lab.demo import SUBNET, LabNode, PingResult, ping_mesh
from p2pvpn.lab.owned import CUT_TIMEOUT, CliRun, OwnedLab, judge_cut
from p2pvpn.lab.topology import LabError, require_netns

NETWORK_LABEL = "lab"


@dataclass
class Report:
    """What the lab did and saw; ``as_json()`` is the ``--json`` summary."""

    nodes: int
    ok: bool = False
    error: str | None = None
    prefix: str = ""
    network_id: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    mesh: dict[str, Any] = field(default_factory=dict)
    revocation: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "error": self.error, "seconds": round(time.monotonic() - self.started, 1),
            "prefix": self.prefix, "network_id": self.network_id, "nodes": self.nodes, "members": self.members,
            "commands": self.commands, "mesh": self.mesh, "revocation": self.revocation,
        }  # fmt: skip


def run_lab(
    nodes: int = 3, keep: float = 0.0, console: Console | None = None,
    summary: Callable[[dict[str, Any]], None] | None = None,
) -> int:  # fmt: skip
    """Run the lab; 0 only if every step did what it should. ``summary`` receives the Report as JSON."""
    console = console or Console()
    report = Report(nodes)
    code = _run_guarded(nodes, keep, console, report)
    report.ok = code == 0
    if summary is not None:
        summary(report.as_json())
    return code


def _run_guarded(nodes: int, keep: float, console: Console, report: Report) -> int:
    if os.geteuid() != 0:
        report.error = "needs root"
        console.print("p2pvpn lab needs root (it creates network namespaces); try: sudo p2pvpn lab")
        return 1
    reason = require_netns()
    if reason is not None:
        report.error = reason
        console.print(f"p2pvpn lab cannot run here: {reason}")
        return 1
    with _signals_end_the_lab() as received:
        try:
            _run(nodes, keep, console, report)
            return 0
        except KeyboardInterrupt:
            report.error = "interrupted"
            console.print("[yellow]interrupted[/yellow]: the lab is torn down")
            return 128 + (received[0] if received else signal.SIGINT)
        except P2pvpnError as exc:  # LabError, or a membership file the commands wrote that does not read
            report.error = str(exc)
            console.print(f"[red]lab failed:[/red] {exc}")
            return 1


def _run(count: int, keep: float, console: Console, report: Report) -> None:
    console.print(
        f"[bold]p2pvpn lab[/bold]: {count} VPN nodes on this machine, each in its own network namespace, "
        f"joined by a virtual switch ({SUBNET}). Nothing here touches your real interfaces."
    )

    def show(run: CliRun) -> None:
        report.commands.append({"node": run.node, "command": run.shown(), "seconds": round(run.seconds, 2)})
        first = run.stdout.strip().splitlines()[0] if run.stdout.strip() else ""
        if run.args[:1] == ("members",):
            first = "(JSON: the table below)"
        elif len(first) > 100:
            first = first[:96] + "…"
        console.print(Text.assemble((f"   {run.node}$ ", "dim"), (run.shown(), "bold")), soft_wrap=True)
        if first:
            console.print(Text(f"       {first}", style="dim"), soft_wrap=True)

    with OwnedLab(count, on_command=show) as lab:
        report.prefix = lab.prefix
        console.print(
            f"Built namespaces [cyan]{lab.prefix}-*[/cyan]. Every command below runs in its node's namespace, "
            f"as you would type it (--dir D is each node's directory under {lab.workdir})."
        )
        console.print("1. n1 creates the network: it holds the owner key and becomes member \"owner\", an admin; "
                      "then it starts its node")
        report.network_id = lab.create_network(NETWORK_LABEL)
        lab.start_owner()
        report.commands.append(_up_entry(lab.nodes[0]))
        console.print(f"   {_up_line(lab.nodes[0])}", highlight=False)

        console.print("2. n1 invites each other node by name; each joins with its one-use token and starts its "
                      "node, with no peer given: n1 (from the token) is its bootstrap, the DHT does the rest")
        lab.invite_join_up()
        report.commands += [_up_entry(node) for node in lab.nodes[1:]]
        console.print(f"   {_up_line(lab.nodes[1])}", highlight=False)
        with console.status("   waiting for every tunnel (noise, then a Hello with each certificate)..."):
            took = lab.wait_mesh()
        tunnels = count * (count - 1) // 2
        console.print(f"   all {tunnels} tunnels up after {took:.1f} s")
        report.mesh["tunnels_up_after_s"] = round(took, 1)

        console.print("3. every node pings every other node's overlay IPv4 and IPv6 through its TUN")
        with ThreadPoolExecutor(max_workers=1) as pool:
            members = pool.submit(lab.members)  # at the same time: each command is an interpreter start
            results = ping_mesh(lab.nodes)
            report.members = members.result()
        console.print(_members_table(report.members, "members, from their certificates (n1: p2pvpn members --json)"))
        console.print(_ping_table(results, title="ping over the overlay, 3 packets each"))
        failed = [r for r in results if not r.ok]
        report.mesh.update(pings=len(results), answered=len(results) - len(failed))
        if failed:
            raise LabError(f"✗ {len(failed)} of {len(results)} pings got no reply")
        console.print(f"   [green]✓[/green] all {len(results)} pings answered")

        revoked = lab.nodes[-1]
        console.print(f"4. n1 revokes {revoked.name}; every other node must close its tunnel to it within "
                      f"{CUT_TIMEOUT:g} s")
        report.revocation.update(node=revoked.name, peer_id=revoked.peer_id, limit_s=CUT_TIMEOUT)
        gone = lab.revoke(revoked)
        report.revocation["tunnels_gone_after_s"] = {name: round(s, 1) for name, s in gone.items()}
        console.print(f"   tunnels to {revoked.name} gone (seconds after the revocation was signed): "
                      + ", ".join(f"{name} {s:.1f}" for name, s in gone.items()), highlight=False)
        with ThreadPoolExecutor(max_workers=1) as pool:
            members = pool.submit(lab.members)
            after = ping_mesh(lab.nodes)
            rows = members.result()
        verdict = judge_cut(after, revoked.name)
        row = next((r for r in rows if r.get("peer_id") == revoked.peer_id), None)
        report.revocation.update(
            pings_with_revoked={"answered": verdict.to_revoked[0], "sent": verdict.to_revoked[1]},
            pings_among_others={"answered": verdict.among_others[0], "sent": verdict.among_others[1]},
            problems=list(verdict.problems),
            members_revoked=bool(row and row.get("revoked")),
            members_online=bool(row and row.get("online")),
        )
        console.print(_ping_table(after, title=f"ping after revoking {revoked.name}", cut=revoked.name))
        console.print(_members_table(rows, "n1: p2pvpn members --json, after the revocation"))
        if not verdict.ok:
            raise LabError("after the revocation: " + "; ".join(verdict.problems[:4]))
        if row is None or not row.get("revoked"):
            raise LabError(f"`p2pvpn members --json` on n1 does not list {revoked.name} as revoked")
        console.print(
            f"   [green]✓[/green] {revoked.name} is cut off: {verdict.to_revoked[0]} of {verdict.to_revoked[1]} "
            f"pings to or from it answered; the others still answer {verdict.among_others[0]} of "
            f"{verdict.among_others[1]}"
        )
        if keep > 0:
            first = lab.nodes[0]
            console.print(
                f"the lab stays up for {keep:g} s (Ctrl-C ends it). Try, in another shell:\n"
                f"   ip netns exec {first.host.netns} ping {lab.nodes[1].ipv4}\n"
                f"   p2pvpn members --dir {first.directory}"
            )
            time.sleep(keep)
        console.print("5. tearing down: stopping nodes, deleting namespaces and node directories")
    console.print(
        f"[green]✓ all {len(results)} pings answered[/green], then {revoked.name} was cut off "
        f"{max(gone.values()):.1f} s after its revocation while the others kept talking"
    )


def _up_entry(node: LabNode) -> dict[str, Any]:
    """A running ``up`` for the summary: the command line as typed (no interpreter path)."""
    return {"node": node.name, "command": "p2pvpn " + " ".join(node.argv[3:]), "seconds": None}


def _up_line(node: LabNode) -> str:
    return f"{node.name}$ p2pvpn up --dir D --listen {node.listen} --tun {node.tun}   (keeps running)"


def _members_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("name", "peer", "ipv4", "ipv6", "roles", "state"):
        table.add_column(col, no_wrap=col != "ipv6", overflow="fold" if col == "ipv6" else "ellipsis")
    for r in rows:
        pid = str(r.get("peer_id", ""))
        state = "[red]revoked[/red]" if r.get("revoked") else ("online" if r.get("online") else "-")
        table.add_row(str(r.get("name", "")), f"…{pid[-6:]}", str(r.get("ipv4", "")), str(r.get("ipv6", "")),
                      ",".join(r.get("roles", [])) or "-", state)
    return table


def _ping_table(results: Sequence[PingResult], title: str, cut: str | None = None) -> Table:
    """One row per pair; with ``cut``, pairs touching that node are expected to get no reply."""
    table = Table(title=title, title_justify="left")
    for col in ("from", "to", "IPv4", "IPv6"):
        table.add_column(col)
    pairs: dict[tuple[str, str], dict[str, PingResult]] = {}
    for r in results:
        pairs.setdefault((r.source.name, r.target.name), {})[r.family] = r

    def cell(r: PingResult) -> str:
        if cut is not None and cut in (r.source.name, r.target.name):
            return "[red]✗ answered[/red]" if r.answered else "[green]—[/green] no reply, as it should"
        if not r.ok:
            return "[red]✗ no reply[/red]"
        return f"[green]✓[/green] {r.rtt_ms:.2f} ms" if r.rtt_ms is not None else "[green]✓[/green]"

    for (src, dst), fams in pairs.items():
        table.add_row(src, dst, cell(fams["IPv4"]), cell(fams["IPv6"]))
    return table


@contextmanager
def _signals_end_the_lab() -> Iterator[list[int]]:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt; later ones are ignored so teardown finishes.

    Yields the list of signals received.
    """
    received: list[int] = []
    stop_signals = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for sig in stop_signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in stop_signals}
    except ValueError:  # not the main thread: leave signals alone
        yield received
        return
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
