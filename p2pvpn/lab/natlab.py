"""A lab with real NATs: two VPN nodes behind their own NAT routers, relays on a "public" network.

::

                           switch wan: br0, 198.18.0.0/24 ("the internet")
          ┌───────────────────┬──────────────┴─────┬───────────────────┐
     relay r1            relay r2            router nat1          router nat2
   198.18.0.10         198.18.0.11        wan 198.18.0.1       wan 198.18.0.2
   p2pvpn relay        p2pvpn relay       masquerade (eim)     masquerade (eim|random)
   (bootstrap too)                        lan 198.18.10.1      lan 198.18.20.1
                                                 │                    │
                                             host a               host b
                                          198.18.10.2           198.18.20.2
                                          p2pvpn up, TUN        p2pvpn up, TUN

The relays run ``p2pvpn relay`` (no TUN, no root needed) and are the
nodes' only bootstrap. a and b know nothing but the relays' addresses:
they find out they are unreachable (AutoNAT), reserve slots on the relays
(found in the DHT), publish their ``/p2p-circuit`` addresses, find each
other's records, connect through a relay and try to punch a hole.

Everything is named with the lab's prefix and removed by :meth:`NatLab.close`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import LabBase, LabNode, LabProcess, p2pvpn_argv, run_cli
from p2pvpn.lab.topology import Host, LabError, Router

WAN = "198.18.0.0/24"
LANS = ("198.18.10.0/24", "198.18.20.0/24")
RELAY_IPS = ("198.18.0.10", "198.18.0.11")
ROUTER_IPS = ("198.18.0.1", "198.18.0.2")
PORT = 4242
NETWORK = "natlab"
NOBODY = 65534
# The relay needs no privileges, so it runs as nobody. Its one capability,
# CAP_DAC_READ_SEARCH, only lets it read an interpreter installed under /root
# (pyenv); it cannot create a TUN or touch the network configuration.
AS_NOBODY = (
    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
    "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search", "--",
)  # fmt: skip


@dataclass
class RelayProc(LabProcess):
    """A ``p2pvpn relay`` process in its own namespace."""

    name: str
    host: Host
    directory: Path
    address: str
    peer_id: str
    port: int = PORT
    proc: subprocess.Popen[bytes] | None = None
    argv: tuple[str, ...] = ()

    @property
    def dial_addr(self) -> str:
        return f"/ip4/{self.address}/tcp/{self.port}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        return self.directory / "relay.log"

    def start(self, *extra: str) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise LabError(f"relay {self.name} is already running")
        self.argv = (
            *p2pvpn_argv("relay", "--dir", str(self.directory), "--listen", f"/ip4/{self.address}/tcp/{self.port}",
                         "--reachability", "public"),
            *extra,
        )
        with open(self.log_path, "ab") as log:
            argv = [*AS_NOBODY, *self.argv]
            self.proc = self.host.popen(*argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        return super().log_tail(lines)


class NatLab(LabBase):
    """``with NatLab(mapping_b="random") as lab: lab.start_relays(); lab.start_nodes()``."""

    def __init__(self, prefix: str | None = None, mapping_a: str = "eim", mapping_b: str = "eim", relays: int = 2) -> None:
        if not 1 <= relays <= len(RELAY_IPS):
            raise ValueError(f"a NAT lab has 1 to {len(RELAY_IPS)} relays")
        super().__init__(prefix, shared_workdir=True)  # the relays run as nobody
        self.mappings = (mapping_a, mapping_b)
        self.relay_count = relays
        self.relays: list[RelayProc] = []
        self.routers: list[Router] = []
        self.nodes: list[LabNode] = []

    def build(self) -> None:
        names = [f"r{i + 1}" for i in range(self.relay_count)] + ["a", "b"]
        with ThreadPoolExecutor(max_workers=4) as pool:  # `init` + `id` cost ~2 s of interpreter start each
            infos = dict(zip(names, pool.map(init_node, [self.workdir / n for n in names])))
        wan = self.topo.add_switch("wan", WAN)
        for i in range(self.relay_count):
            host = self.topo.add_host(f"r{i + 1}")
            self.topo.attach(host, wan, RELAY_IPS[i])
            directory = self.workdir / host.name
            for path in (directory, *directory.iterdir()):
                shutil.chown(path, NOBODY, NOBODY)  # the relay runs as nobody (see RelayProc.start)
            self.relays.append(RelayProc(host.name, host, directory, RELAY_IPS[i], infos[host.name]["peer_id"]))
        for i, name in enumerate(("a", "b")):
            router = self.topo.add_nat(f"nat{i + 1}", wan, LANS[i], self.mappings[i], wan_address=ROUTER_IPS[i])
            self.routers.append(router)
            host = self.topo.add_host(name)
            address = self.topo.behind(host, router)
            info = infos[name]
            self.nodes.append(LabNode(
                name=name, host=host, directory=self.workdir / name, address=address, tun=self.tun_name,
                peer_id=info["peer_id"], ipv4=info["ipv4"], ipv6=info["ipv6"],
            ))  # fmt: skip

    def start_relays(self, *extra: str) -> None:
        """Start every relay, each with the others as bootstrap (relays should know each other)."""
        for relay in self.relays:
            others = [arg for r in self.relays if r is not relay for arg in ("--bootstrap", r.dial_addr)]
            relay.start(*others, *extra)
        for relay in self.relays:
            relay.host.wait_listening(relay.port, timeout=30)

    def bootstrap_args(self) -> list[str]:
        """The relays as bootstrap, and the lab's nodes as allowed peers: without a network owner only
        listed peers get tunnels, and the nodes know each other only by what they find in the DHT."""
        args: list[str] = []
        for relay in self.relays:
            args += ["--bootstrap", relay.dial_addr]
        for node in self.nodes:
            args += ["--allow-peer", node.peer_id]
        return args

    def start_nodes(self, *extra: str, nodes: Sequence[LabNode] | None = None) -> None:
        for node in nodes if nodes is not None else self.nodes:
            node.start((), *self.bootstrap_args(), *extra)

    def peer_view(self, node: LabNode, other: LabNode) -> dict[str, Any] | None:
        """``node``'s view of ``other`` (None if unknown or the node does not answer)."""
        try:
            peers = node.status(timeout=2)["peers"]
        except ControlError:
            return None
        return next((p for p in peers if p["peer_id"] == other.peer_id), None)


def init_node(directory: Path) -> dict[str, str]:
    """``p2pvpn init`` a directory for network NETWORK; its ``p2pvpn id --json``."""
    directory.mkdir(mode=0o755)
    run_cli("init", "--dir", str(directory))
    (directory / "config.toml").write_text(f'network = "{NETWORK}"\n')
    return json.loads(run_cli("id", "--dir", str(directory), "--json").stdout)  # type: ignore[no-any-return]


class MixedNatLab(LabBase):
    """The NAT lab's wiring for one Python node and one foreign peer (tests/interop: a go-libp2p peer).

    ::

                     switch wan 198.18.0.0/24
          ┌────────────────┼─────────────────────┐
       relay r1        router nat1           router nat2
     198.18.0.10    wan 198.18.0.1 (eim)   wan 198.18.0.2 (eim)
                          │                      │
                        host a                 host b
                     198.18.10.2            198.18.20.2
                  p2pvpn up, TUN           (the test's own peer)

    The same NATs as :class:`NatLab` (nftables masquerade on each router).
    Only ``a`` is a p2pvpn node (``p2pvpn init`` here); r1 and b are bare
    namespaces for the test to run its relay and peer in. The outside
    addresses are in 198.18.0.0/15, which go-libp2p counts as unroutable, not
    public (docs/interop.md, "Hole punching").
    """

    def __init__(self, prefix: str | None = None, mapping_a: str = "eim", mapping_b: str = "eim") -> None:
        super().__init__(prefix)
        self.mappings = (mapping_a, mapping_b)
        self.routers: list[Router] = []
        self.relay_host: Host | None = None
        self.relay_address = RELAY_IPS[0]
        self.peer_host: Host | None = None
        self.peer_address = ""
        self.node: LabNode | None = None

    def build(self) -> None:
        info = init_node(self.workdir / "a")
        wan = self.topo.add_switch("wan", WAN)
        self.relay_host = self.topo.add_host("r1")
        self.topo.attach(self.relay_host, wan, self.relay_address)
        for i in range(2):
            self.routers.append(self.topo.add_nat(f"nat{i + 1}", wan, LANS[i], self.mappings[i],
                                                  wan_address=ROUTER_IPS[i]))
        host = self.topo.add_host("a")
        address = self.topo.behind(host, self.routers[0])
        self.node = LabNode(
            name="a", host=host, directory=self.workdir / "a", address=address, tun=self.tun_name,
            peer_id=info["peer_id"], ipv4=info["ipv4"], ipv6=info["ipv6"],
        )  # fmt: skip
        self.peer_host = self.topo.add_host("b")
        self.peer_address = self.topo.behind(self.peer_host, self.routers[1])
