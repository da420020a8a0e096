"""A lab network formed the way a user forms one: ``network create``, ``invite``, ``join``, ``up``, ``revoke``.

Theory of operation
-------------------
The namespaces are those of :class:`p2pvpn.lab.demo.Lab` (one switch, one
host namespace per node), but no node lists another as a peer. Every
membership step is the command a user would type, run as its own process
inside the node's namespace (:meth:`OwnedLab.cli`)::

    n1$ p2pvpn network create lab --dir D1        # owner key; n1 is member "owner", an admin
    n1$ p2pvpn up --dir D1 --listen ... --tun ... # the inviter must be running
    n1$ p2pvpn invite --dir D1 --name n2          # one token per node, one use each
    n2$ p2pvpn join TOKEN --dir D2                # reaches n1, proves the secret, gets a certificate
    n2$ p2pvpn up --dir D2 --listen ... --tun ... # the owner is its only bootstrap
                                                  # (n3, n4, ... the same, at the same time)
    n1$ p2pvpn members --dir D1 --json
    n1$ p2pvpn revoke n3 --dir D1                 # while every node's tunnels are watched

Members are admitted by their certificates only: the owner is every
member's bootstrap, and members find each other through the DHT. A node's
overlay addresses are the ones its certificate gives it, read from the
membership files the commands wrote. The judgement of what a revocation
must change (:func:`judge_cut`) is a pure function of the echoes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libp2p.peer.id import ID

from p2pvpn import identity
from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import CLI_TIMEOUT, PORT, SUBNET, LabBase, LabNode, PingResult, p2pvpn_argv, wait_mesh
from p2pvpn.lab.topology import Host, LabError
from p2pvpn.membership.store import Store

CUT_TIMEOUT = 10.0  # seconds: every member closes its tunnels to a revoked peer within this (issue 11)
READY_TIMEOUT = 60.0  # seconds for the inviter's `up` to answer on its control socket (a busy machine)
MESH_TIMEOUT = 60.0  # seconds for the mesh, plus 2 per node: members start, then find each other in the DHT
JOIN_WORKERS = 4  # joins at once (each an interpreter start plus a libp2p host)


@dataclass
class CliRun:
    """One p2pvpn command a user would have typed, and what it printed."""

    node: str
    args: tuple[str, ...]
    stdout: str
    seconds: float

    def shown(self) -> str:
        """The command line, as typed in the node's namespace."""
        return "p2pvpn " + " ".join(a if len(a) <= 48 else a[:40] + "…" for a in self.args)


class OwnedLab(LabBase):
    """N namespaces on one switch whose nodes form an owned network through the CLI.

    ``on_command`` sees every command once it finished (the demo prints
    them). Leaving the block stops the nodes, deletes the namespaces and
    the node directories.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        prefix: str | None = None,
        subnet: str = SUBNET,
        on_command: Callable[[CliRun], None] | None = None,
        routed: bool = False,
    ) -> None:
        if not 2 <= nodes <= 50:
            raise ValueError("an owned lab has 2 to 50 nodes")
        super().__init__(prefix)
        self.count = nodes
        self.subnet = subnet
        self.on_command = on_command
        self.hosts: list[Host] = []
        self.addresses: list[str] = []
        self.nodes: list[LabNode] = []
        self.network_id = ""
        self.routed = routed

    def build(self) -> None:
        """Namespaces and the switch; node directories are made by the commands themselves.

        ``routed``: the switch routes instead of bridging, for many nodes (see
        :class:`p2pvpn.lab.topology.Switch`: the kernel's shared neighbour table).
        """
        lan = self.topo.add_switch("lan", self.subnet, routed=self.routed)
        self.hosts = [self.topo.add_host(f"n{i}") for i in range(1, self.count + 1)]
        self.addresses = [self.topo.attach(host, lan) for host in self.hosts]

    def directory(self, host: Host) -> Path:
        return self.workdir / host.name

    @property
    def owner_host(self) -> Host:
        return self.hosts[0]

    # -- the commands -------------------------------------------------------

    def cli(self, host: Host, *args: str, timeout: float = CLI_TIMEOUT) -> CliRun:
        """Run ``p2pvpn ARGS`` in ``host``'s namespace as a user would; LabError with its one-line error."""
        env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
        start = time.monotonic()
        try:
            result = host.run(*p2pvpn_argv(*args), check=False, timeout=timeout, env=env)
        except LabError:
            raise LabError(f"`p2pvpn {' '.join(args[:2])}` on {host.name} timed out after {timeout:g} s") from None
        run = CliRun(host.name, args, result.stdout, time.monotonic() - start)
        if result.returncode != 0:
            raise LabError(f"`{run.shown()}` on {host.name} exited {result.returncode}: {_error_line(result.stderr)}")
        if self.on_command is not None:
            self.on_command(run)
        return run

    def create_network(self, label: str = "lab") -> str:
        """``p2pvpn network create`` on the first node; the network ID."""
        directory = self.directory(self.owner_host)
        self.cli(self.owner_host, "network", "create", label, "--dir", str(directory))
        self.network_id = Store(directory).network()[0]
        return self.network_id

    def start_owner(self) -> LabNode:
        """``p2pvpn up`` on the owner, which must run for invites to be redeemed; waits until it answers."""
        owner = self._node(0)
        self.nodes = [owner]
        owner.start()
        self._wait_ready(owner)
        return owner

    def invite(self, name: str) -> str:
        """``p2pvpn invite --name NAME`` on the owner: a one-use token."""
        directory = self.directory(self.owner_host)
        token = self.cli(self.owner_host, "invite", "--dir", str(directory), "--name", name).stdout.strip()
        if not token or "\n" in token:
            raise LabError(f"`p2pvpn invite` printed no one-line token: {token[:80]!r}")
        return token

    def invite_join_up(self) -> list[LabNode]:
        """For every other node, at once: ``invite --name nK`` on the owner, ``join TOKEN`` and ``up`` on nK.

        Each node starts as soon as it joined; its only bootstrap is the
        owner, written by ``join``. The owner's commands serialise on its
        directory's lock, as a user's would.
        """

        def one(index: int) -> LabNode:
            host = self.hosts[index]
            token = self.invite(host.name)
            self.cli(host, "join", token, "--dir", str(self.directory(host)))
            node = self._node(index)
            node.start()
            return node

        with ThreadPoolExecutor(max_workers=JOIN_WORKERS) as pool:
            members = list(pool.map(one, range(1, self.count)))
        self.nodes = [self.nodes[0], *members]
        return members

    def members(self, node: LabNode | None = None) -> list[dict[str, Any]]:
        """``p2pvpn members --json`` on ``node`` (default: the owner)."""
        host = (node or self.nodes[0]).host
        text = self.cli(host, "members", "--dir", str(self.directory(host)), "--json").stdout
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            raise LabError(f"`p2pvpn members --json` printed no JSON: {text[:80]!r}") from None
        if not isinstance(rows, list):
            raise LabError("`p2pvpn members --json` printed no list")
        return rows

    # -- waiting ------------------------------------------------------------

    def wait_mesh(self, timeout: float | None = None) -> float:
        """Seconds until every node holds a settled tunnel to every other one."""
        return wait_mesh(self.nodes, MESH_TIMEOUT + 2.0 * len(self.nodes) if timeout is None else timeout)

    def revoke(self, node: LabNode, timeout: float = CUT_TIMEOUT) -> dict[str, float]:
        """``p2pvpn revoke NAME`` on the owner; per other node, seconds from the revocation until its tunnel went.

        The tunnels are watched while the command runs (an interpreter start
        can take longer than the cut itself). The clock starts when the
        revocation was signed, taken from the owner's revocation list
        (:func:`revoked_since`, never later than the signature, so the times
        given are never too short). Raises LabError if a node still holds a
        tunnel to ``node`` ``timeout`` s after that, or got it back.
        """
        others = [n for n in self.nodes if n is not node]
        gone_at: dict[str, float] = {}
        signed: float | None = None
        owner_dir = self.directory(self.owner_host)
        with ThreadPoolExecutor(max_workers=1) as pool:
            command = pool.submit(self.cli, self.owner_host, "revoke", node.name, "--dir", str(owner_dir))
            budget = CLI_TIMEOUT + timeout
            deadline = time.monotonic() + budget
            for _ in range(int(budget / 0.1) + 2):  # bounded in count and time
                for other in others:
                    if not other.running():
                        raise LabError(f"node {other.name} exited:\n{other.log_tail()}")
                    held = _holds_tunnel(other, node)
                    if held is False:
                        gone_at.setdefault(other.name, time.time())
                    elif held:
                        gone_at.pop(other.name, None)  # it came back (or was never gone)
                if signed is None and command.done():
                    command.result()  # LabError if revoke failed
                    signed = revoked_since(owner_dir, node.peer_id)
                if signed is not None and (len(gone_at) == len(others) or time.time() >= signed + timeout):
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            command.result()
        if signed is None:
            raise LabError(f"`p2pvpn revoke {node.name}` did not finish within {budget:g} s")
        took = {name: max(0.0, at - signed) for name, at in gone_at.items()}
        late = [n.name for n in others if n.name not in took or took[n.name] > timeout]
        if late:
            raise LabError(f"{', '.join(late)} still had a tunnel to {node.name} {timeout:g} s after the revocation")
        return {n.name: took[n.name] for n in others}

    # -- internals ----------------------------------------------------------

    def _node(self, index: int) -> LabNode:
        """The LabNode of a host whose directory holds a certificate (its addresses come from it)."""
        host = self.hosts[index]
        directory = self.directory(host)
        store = Store(directory)
        certificate = store.certificate()
        if certificate is None:
            raise LabError(f"{directory} holds no certificate")
        node = LabNode(
            name=host.name, host=host, directory=directory, address=self.addresses[index], tun=self.tun_name,
            peer_id=str(identity.peer_id(identity.load(directory / identity.KEY_FILE))),
            ipv4=str(certificate.ipv4), ipv6=str(certificate.ipv6), port=PORT,
        )  # fmt: skip
        return node

    def _wait_ready(self, node: LabNode) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(int(READY_TIMEOUT / 0.1) + 1):  # bounded in count and time
            if not node.running():
                raise LabError(f"node {node.name} exited:\n{node.log_tail()}")
            try:
                if node.status(timeout=2).get("listen"):
                    return
            except ControlError:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise LabError(f"node {node.name} did not answer on its control socket within {READY_TIMEOUT:g} s")


def _holds_tunnel(node: LabNode, other: LabNode) -> bool | None:
    """Does ``node`` report a tunnel "up" to ``other``? None if it does not answer."""
    try:
        peers = node.status(timeout=2)["peers"]
    except ControlError:
        return None
    return any(p["peer_id"] == other.peer_id and p.get("state") == "up" for p in peers)


def revoked_since(directory: Path, peer_id: str) -> float:
    """When the revocation of ``peer_id`` in ``directory``'s list was signed, at the earliest (unix seconds).

    ``p2pvpn revoke`` voids certificates issued before ``int(now) + 1``;
    one second less is never later than its signature.
    """
    entries = Store(directory).revocations().entries
    not_before = entries.get(ID.from_base58(peer_id).to_bytes())
    if not_before is None:
        raise LabError(f"{directory}'s revocation list does not hold {peer_id}")
    return float(not_before - 1)


def _error_line(stderr: str) -> str:
    """The command's own error line among its log lines."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("p2pvpn: error:")]
    return (errors or lines or ["no error output"])[-1]


# -- what a revocation must change -------------------------------------------


@dataclass(frozen=True)
class CutVerdict:
    """Echoes after a revocation, sorted by what they should have done."""

    to_revoked: tuple[int, int]  # (answered, pinged) of echoes between the revoked node and the others
    among_others: tuple[int, int]  # (answered, pinged) of echoes between the remaining members
    problems: tuple[str, ...]  # one line per pair that did the wrong thing

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_cut(results: Sequence[PingResult], revoked: str) -> CutVerdict:
    """Pairs touching ``revoked`` must get no reply at all; every other pair must answer every echo."""
    involved = [r for r in results if revoked in (r.source.name, r.target.name)]
    others = [r for r in results if revoked not in (r.source.name, r.target.name)]
    problems = [f"{r.source.name} -> {r.target.name} {r.family} still answered"
                for r in involved if r.answered]  # fmt: skip
    problems += [f"{r.source.name} -> {r.target.name} {r.family} got no reply" for r in others if not r.ok]
    return CutVerdict(
        to_revoked=(sum(r.answered for r in involved), len(involved)),
        among_others=(sum(r.ok for r in others), len(others)),
        problems=tuple(problems),
    )

