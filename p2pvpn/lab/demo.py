"""Labs on this machine: VPN nodes in network namespaces, driven as processes, checked by ICMP echoes.

Theory of operation
-------------------
One switch namespace holds a bridge for the underlay 198.18.1.0/24; each
node is a host namespace plugged into it, with its own ``p2pvpn up``
process, its own TUN and its own node directory (a temporary one)::

                    switch lan: br0, 198.18.1.0/24
              ┌──────────────┼──────────────┐
          host n1         host n2        host n3
      eth0 198.18.1.1  eth0 198.18.1.2  eth0 198.18.1.3
      TUN 100.x / fd..  TUN 100.y / fd..  TUN 100.z / fd..

In :class:`Lab` every node lists every other node as a static peer (a full
mesh; :class:`p2pvpn.lab.owned.OwnedLab` forms an owned network instead), so
each pair has one noise-encrypted libp2p stream; pings between overlay
addresses travel TUN -> node -> stream -> node -> TUN. The echoes come
from Python (:mod:`p2pvpn.lab.echo`), so the lab needs nothing but root,
iproute2 and this package.

:class:`Lab` is the reusable part (the end-to-end tests drive nodes with
it); :func:`run_lab` is ``p2pvpn lab`` (p2pvpn.lab.story). Everything is torn down on the
way out, also on Ctrl-C or SIGTERM: node processes stopped, namespaces
deleted (their TUNs and veths go with them), node directories removed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from p2pvpn import addressing, config, identity
from p2pvpn.control import client
from p2pvpn.errors import ControlError
from p2pvpn.lab.echo import EchoResult
from p2pvpn.lab.topology import Host, LabError, Topology

if TYPE_CHECKING:
    from rich.console import Console

SUBNET = "198.18.1.0/24"
PORT = 4242
UP_TIMEOUT = 30.0  # seconds for every tunnel of the mesh to come up
SETTLE = 1.0  # seconds a tunnel must have been up to count
CLI_TIMEOUT = 120.0  # a cold Python start importing libp2p, on a busy 2-core machine
PING_WORKERS = 4  # echo processes at once (each pings all its targets)


def p2pvpn_argv(*args: str) -> list[str]:
    """The command line that runs this very p2pvpn (same interpreter, same install)."""
    return [sys.executable, "-m", "p2pvpn", *args]


class LabProcess:
    """A p2pvpn process of a lab (``up`` or ``relay``), seen from outside: alive?, status, log."""

    directory: Path
    proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def control_path(self) -> Path:
        from p2pvpn.config import Config
        from p2pvpn.node import find_control_path

        return find_control_path(Config(), self.directory)  # labs never set control_socket

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        """The process's status over its control socket (ControlError if it does not answer)."""
        return client.request(self.control_path, "status", timeout=timeout)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LabNode(LabProcess):
    """One p2pvpn node of a lab: its namespace, directory, addresses and process."""

    name: str
    host: Host
    directory: Path
    address: str  # underlay IPv4 on eth0
    tun: str
    peer_id: str
    ipv4: str  # overlay
    ipv6: str  # overlay
    port: int = PORT
    proc: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)

    @property
    def listen(self) -> str:
        return f"/ip4/{self.address}/tcp/{self.port}"

    @property
    def dial_addr(self) -> str:
        """What other nodes pass as ``--peer`` to reach this one."""
        return f"{self.listen}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        return self.directory / "node.log"

    def up_argv(self, peers: Sequence[LabNode], *extra: str) -> list[str]:
        argv = p2pvpn_argv("up", "--dir", str(self.directory), "--listen", self.listen, "--tun", self.tun)
        for peer in peers:
            argv += ["--peer", peer.dial_addr]
        return [*argv, *extra]

    def start(self, peers: Sequence[LabNode] = (), *extra: str) -> subprocess.Popen[bytes]:
        """Start ``p2pvpn up`` in this node's namespace (output appended to node.log)."""
        if self.proc is not None and self.proc.poll() is None:
            raise LabError(f"node {self.name} is already running")
        self.argv = self.up_argv(peers, *extra)
        return self.restart()

    def restart(self) -> subprocess.Popen[bytes]:
        """Start the node again with the arguments of the last :meth:`start`."""
        with open(self.log_path, "ab") as log:
            self.proc = self.host.popen(*self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self.proc

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the node and wait for it; its exit code (None if it was not running)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)  # `ip netns exec` execs, so this is the node itself
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode


    def peer_status(self, other: LabNode) -> dict[str, Any] | None:
        """This node's view of ``other`` (None if unknown or the node does not answer)."""
        try:
            peers = self.status()["peers"]
        except ControlError:
            return None
        return next((p for p in peers if p["peer_id"] == other.peer_id), None)

    def echo(self, dests: Sequence[str], count: int = 3, timeout: float = 2.0) -> list[EchoResult]:
        """ICMP/ICMPv6 echoes from this node's namespace to each of ``dests``, sent from Python.

        Never raises for a lost echo; a destination that did not answer has ``ok`` False.
        """
        argv = [sys.executable, "-m", "p2pvpn.lab.echo", "ping", "--count", str(count), "--timeout", str(timeout), *dests]
        budget = count * 0.2 + timeout + CLI_TIMEOUT / 4  # echoes plus an interpreter start on a busy machine
        try:
            result = self.host.run(*argv, check=False, timeout=budget)
        except LabError as exc:  # timed out
            return [EchoResult(d, sent=count, error=str(exc)) for d in dests]
        answers = {}
        for line in result.stdout.splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            answers[data["dest"]] = EchoResult(data["dest"], data["sent"], data["received"], data["rtts_ms"], data["error"])
        error = result.stderr.strip() or f"echo exited {result.returncode}"
        return [answers.get(d, EchoResult(d, sent=count, error=error)) for d in dests]

    def ping(self, dest: str, *args: str, count: int = 3, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """The ``ping`` binary from this node's namespace (tests use its flags); never raises on failure."""
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "2", *args, dest]
        try:
            return self.host.run(*argv, check=False, timeout=timeout)
        except LabError as exc:  # timed out
            return subprocess.CompletedProcess(argv, 124, "", str(exc))



class LabBase:
    """What every lab shares: namespaces under one unique prefix, a work directory, and cleanup.

    Entering builds the lab (``build``); leaving, or a failed build, stops
    every process in its namespaces and deletes namespaces and directories.
    ``shared_workdir``: processes running as another user (a relay as
    nobody) must reach their own directories below it.
    """

    def __init__(self, prefix: str | None = None, *, shared_workdir: bool = False) -> None:
        self.topo = Topology(prefix)
        self.prefix = self.topo.prefix
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        if shared_workdir:
            self.workdir.chmod(0o711)

    def __enter__(self) -> Self:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def tun_name(self) -> str:
        return f"{self.prefix}-vpn"[:15]

    def build(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the processes (SIGTERM, then SIGKILL), delete namespaces and directories."""
        try:
            self.topo.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Lab(LabBase):
    """N p2pvpn nodes on one switch; ``with Lab(3) as lab: lab.start(); lab.wait_up()``.

    ``mtus`` optionally gives each node its own ``--mtu``. Leaving the block
    stops the nodes, deletes the namespaces and the node directories.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        prefix: str | None = None,
        subnet: str = SUBNET,
        mtus: Sequence[int] | None = None,
    ) -> None:
        if not 1 <= nodes <= 50:
            raise ValueError("a lab has 1 to 50 nodes")
        if mtus is not None and len(mtus) != nodes:
            raise ValueError("give one MTU per node")
        super().__init__(prefix)
        self.count = nodes
        self.subnet = subnet
        self.mtus = list(mtus) if mtus is not None else None
        self.nodes: list[LabNode] = []

    def build(self) -> None:
        """Namespaces, switch, one initialised node directory per node (nothing runs yet)."""
        lan = self.topo.add_switch("lan", self.subnet)
        hosts = [self.topo.add_host(f"n{i}") for i in range(1, self.count + 1)]
        addresses = [self.topo.attach(host, lan) for host in hosts]
        with ThreadPoolExecutor(max_workers=4) as pool:  # each `init` costs an interpreter start (~1 s)
            infos = list(pool.map(self.init_node, [self.workdir / h.name for h in hosts]))
        for host, address, info in zip(hosts, addresses, infos):
            self.nodes.append(LabNode(
                name=host.name, host=host, directory=self.workdir / host.name, address=address,
                tun=self.tun_name, peer_id=info["peer_id"], ipv4=info["ipv4"], ipv6=info["ipv6"],
            ))  # fmt: skip

    @staticmethod
    def init_node(directory: Path) -> dict[str, str]:
        """``p2pvpn init`` a node directory; what ``p2pvpn id --json`` would print.

        The identity is read in-process: one interpreter start less per node.
        """
        run_cli("init", "--dir", str(directory))
        return node_id(directory)

    def start(self, *extra: str) -> None:
        """Start every node with all the others as static peers (a full mesh)."""
        for i, node in enumerate(self.nodes):
            others = [n for n in self.nodes if n is not node]
            mtu = ("--mtu", str(self.mtus[i])) if self.mtus else ()
            node.start(others, *mtu, *extra)

    def wait_up(
        self, timeout: float | None = None, nodes: Sequence[LabNode] | None = None, stable_for: float = SETTLE
    ) -> float:
        """Wait until each of ``nodes`` (default: all) reports the others "up" for ``stable_for`` s; seconds it took."""
        if timeout is None:  # every node is a Python process starting up on the same few cores
            timeout = UP_TIMEOUT + 2.0 * len(self.nodes)
        return wait_mesh(self.nodes if nodes is None else nodes, timeout, stable_for)


def wait_mesh(nodes: Sequence[LabNode], timeout: float | None = None, stable_for: float = SETTLE) -> float:
    """Wait until each of ``nodes`` reports every other one "up" for ``stable_for`` s; seconds it took.

    Two nodes that dial each other at once briefly hold two tunnels and
    keep one; waiting until the states settle keeps that out of the checks.
    Raises LabError naming what is missing (and the log of a node that died).
    """
    nodes = list(nodes)
    if timeout is None:  # every node is a Python process starting up on the same few cores
        timeout = UP_TIMEOUT + 2.0 * len(nodes)
    start = time.monotonic()
    missing = ""
    for _ in range(int(timeout / 0.1) + 1):  # bounded in count and time
        missing = ""
        for node in nodes:
            if not node.running():
                code = node.proc.returncode if node.proc else None
                raise LabError(f"node {node.name} exited ({code}):\n{node.log_tail()}")
            try:
                peers = {p["peer_id"]: p for p in node.status(timeout=2)["peers"]}
            except ControlError as exc:
                missing = f"{node.name}: {exc}"
                break
            settled = time.time() - stable_for

            def steady(other: LabNode) -> bool:
                view = peers.get(other.peer_id, {})
                return bool(view.get("state") == "up" and view.get("since", 0) <= settled)

            down = [n.name for n in nodes if n is not node and not steady(n)]
            if down:
                missing = f"{node.name} has no tunnel to {', '.join(down)}"
                break
        if not missing:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            break
        time.sleep(0.1)
    raise LabError(f"tunnels not up after {timeout:g} s: {missing}")


def node_id(directory: Path) -> dict[str, str]:
    """A node directory's peer ID and overlay addresses, as ``p2pvpn id --json`` gives them."""
    cfg = config.load(directory)
    pid = identity.peer_id(identity.load(directory / identity.KEY_FILE))
    addrs = addressing.derive(pid.to_bytes(), cfg.network)
    return {"peer_id": str(pid), "ipv4": str(addrs.ipv4), "ipv6": str(addrs.ipv6), "network": cfg.network}


def run_cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a short p2pvpn command in the root namespace; LabError with its message if it fails."""
    argv = p2pvpn_argv(*args)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"`p2pvpn {' '.join(args)}` timed out after {timeout:g} s") from None
    if result.returncode != 0:
        raise LabError(f"`p2pvpn {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")
    return result


# -- the narrated demo --------------------------------------------------------


@dataclass
class PingResult:
    source: LabNode
    target: LabNode
    family: str  # "IPv4" or "IPv6"
    ok: bool  # every echo answered
    rtt_ms: float | None
    received: int = 0

    @property
    def answered(self) -> bool:
        """At least one echo came back."""
        return self.received > 0


def ping_mesh(nodes: Sequence[LabNode]) -> list[PingResult]:
    """Echo every node's overlay IPv4 and IPv6 from every other node (one echo process per source)."""

    def from_node(src: LabNode) -> list[PingResult]:
        targets = [(dst, fam) for dst in nodes if dst is not src for fam in ("IPv4", "IPv6")]
        answers = src.echo([dst.ipv4 if fam == "IPv4" else dst.ipv6 for dst, fam in targets])
        return [PingResult(src, dst, fam, a.ok, a.avg_ms, a.received) for (dst, fam), a in zip(targets, answers)]

    with ThreadPoolExecutor(max_workers=PING_WORKERS) as pool:
        return [r for rs in pool.map(from_node, nodes) for r in rs]


def run_lab(nodes: int = 3, keep: float = 0.0, console: Console | None = None,
            summary: Callable[[dict[str, Any]], None] | None = None) -> int:
    """The narrated ``p2pvpn lab`` (p2pvpn.lab.story); 0 only if every step did what it should."""
    from p2pvpn.lab.story import run_lab as run  # the story builds on this module

    return run(nodes, keep, console, summary)


def wait_for(check: Any, timeout: float, poll: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy or ``timeout`` s pass; its last value."""
    deadline = time.monotonic() + timeout
    result = None
    for _ in range(int(timeout / poll) + 1):  # bounded in count and time
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(poll)
    return result
