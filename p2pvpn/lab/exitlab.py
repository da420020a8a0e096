"""A lab for the exit role: a client, two exits, a relay, and an "internet" with a web server.

::

                        switch lan: br0, 198.18.1.0/24 (the overlay's underlay)
        ┌──────────────────┬───────────────┴───┬────────────────────┐
     client             exit1                exit2               relay
   198.18.1.3        198.18.1.1           198.18.1.2          198.18.1.10
   p2pvpn up         p2pvpn up --exit     p2pvpn up --exit    p2pvpn relay (bootstrap, DHT)
   default via       eth1 203.0.113.1     eth1 203.0.113.2
   198.18.1.254           2001:db8::1          2001:db8::2
   (nobody there)         └─────── switch net: br0, 203.0.113.0/24 and 2001:db8::/64 ("the internet")
                                               │
                                              www 203.0.113.10 and .20, 2001:db8::10
                                              python -m http.server 8080 (one per family)

The client's own default route leads nowhere (no host has 198.18.1.254),
and it has no IPv6 route beyond its TUN and link, so whatever reaches the
web server went through an exit. IPv6 on the "internet" comes from the
documentation prefix 2001:db8::/32 and exists only in these namespaces. The server logs
each request's source address, which must be an exit's 203.0.113.x.

Everything is named with the lab's prefix; :meth:`ExitLab.close` stops the
processes and deletes the namespaces and directories, also after a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from p2pvpn.control import client
from p2pvpn.errors import ControlError
from p2pvpn.lab.demo import Lab, LabBase, LabNode
from p2pvpn.lab.natlab import NOBODY, RelayProc
from p2pvpn.lab.topology import Host, LabError

LAN = "198.18.1.0/24"
NET = "203.0.113.0/24"
EXIT_LAN_IPS = ("198.18.1.1", "198.18.1.2")
EXIT_NET_IPS = ("203.0.113.1", "203.0.113.2")
CLIENT_IP = "198.18.1.3"
RELAY_IP = "198.18.1.10"
NOWHERE = "198.18.1.254"
WWW_IP = "203.0.113.10"
WWW_IP_DENIED = "203.0.113.20"
WWW_PORT = 8080
NET6_PREFIXLEN = 64
EXIT_NET6_IPS = ("2001:db8::1", "2001:db8::2")
WWW6_IP = "2001:db8::10"
BIG_FILE = "big.bin"
BIG_SIZE = 64 << 20
_LOG_RE = re.compile(r"^(\S+) - - \[[^]]*\] \"GET (\S+)")


class ExitLab(LabBase):
    """``with ExitLab() as lab: lab.start_relay(); lab.start_exits(); lab.start_client("--use-exit", "auto")``."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__(prefix, shared_workdir=True)  # the relay runs as nobody
        self.exits: list[LabNode] = []
        self.client: LabNode | None = None
        self.relay: RelayProc | None = None
        self.www: Host | None = None
        self.www_proc: subprocess.Popen[bytes] | None = None
        self.www6_proc: subprocess.Popen[bytes] | None = None

    def build(self) -> None:
        names = ["exit1", "exit2", "client", "relay"]
        with ThreadPoolExecutor(max_workers=4) as pool:
            infos = dict(zip(names, pool.map(Lab.init_node, [self.workdir / n for n in names])))
        lan = self.topo.add_switch("lan", LAN)
        net = self.topo.add_switch("net", NET)
        for i in range(2):
            host = self.topo.add_host(f"exit{i + 1}")
            self.topo.attach(host, lan, EXIT_LAN_IPS[i])
            self.topo.attach(host, net, EXIT_NET_IPS[i], iface="eth1")
            _add_v6(host, EXIT_NET6_IPS[i], "eth1")
            self.exits.append(self._node(host, EXIT_LAN_IPS[i], infos[host.name]))
        host = self.topo.add_host("client")
        self.topo.attach(host, lan, CLIENT_IP)
        host.add_route("default", NOWHERE)
        self.client = self._node(host, CLIENT_IP, infos["client"])
        relay_host = self.topo.add_host("relay")
        self.topo.attach(relay_host, lan, RELAY_IP)
        directory = self.workdir / "relay"
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, NOBODY, NOBODY)  # `p2pvpn relay` runs as nobody
        self.relay = RelayProc("relay", relay_host, directory, RELAY_IP, infos["relay"]["peer_id"])
        self.www = self.topo.add_host("www")
        self.topo.attach(self.www, net, WWW_IP)
        self.www.run("ip", "addr", "add", f"{WWW_IP_DENIED}/24", "dev", "eth0")
        _add_v6(self.www, WWW6_IP, "eth0")
        site = self.workdir / "www"
        site.mkdir()
        (site / "hello.txt").write_text("hello from the internet\n")
        with open(site / BIG_FILE, "wb") as f:
            f.truncate(BIG_SIZE)

    def _node(self, host: Host, address: str, info: dict[str, str]) -> LabNode:
        return LabNode(name=host.name, host=host, directory=self.workdir / host.name, address=address,
                       tun=self.tun_name, peer_id=info["peer_id"], ipv4=info["ipv4"], ipv6=info["ipv6"])

    # -- processes ---------------------------------------------------------------

    def start_www(self) -> None:
        assert self.www is not None
        log = open(self.workdir / "www.log", "ab")
        try:
            self.www_proc = self.www.popen("python3", "-u", "-m", "http.server", str(WWW_PORT), "--bind", "0.0.0.0",
                                           "--directory", str(self.workdir / "www"),
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.www.wait_listening(WWW_PORT, timeout=30)

    def start_www6(self) -> None:
        """A second web server on [2001:db8::10]:8080, logging to www6.log (the IPv4 one keeps its log)."""
        assert self.www is not None
        log = open(self.workdir / "www6.log", "ab")
        try:
            self.www6_proc = self.www.popen("python3", "-u", "-m", "http.server", str(WWW_PORT), "--bind", WWW6_IP,
                                            "--directory", str(self.workdir / "www"),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + 30
        error = ""
        for _ in range(300):  # bounded in count and time: until it answers in its own namespace
            probe = self.www.run("curl", "-6", "-sS", "--max-time", "2", "-o", "/dev/null",
                                 f"http://[{WWW6_IP}]:{WWW_PORT}/hello.txt", check=False)
            if probe.returncode == 0:
                return
            error = probe.stderr.strip()
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise LabError(f"the IPv6 web server at [{WWW6_IP}]:{WWW_PORT} did not answer within 30 s: {error}")

    def start_relay(self, *extra: str) -> None:
        assert self.relay is not None
        self.relay.start(*extra)
        self.relay.host.wait_listening(self.relay.port, timeout=60)

    def bootstrap_args(self) -> list[str]:
        """The relay as bootstrap, and the exits and the client as allowed peers: without a network
        owner only listed peers get tunnels, and they find each other only in the DHT."""
        assert self.relay is not None
        nodes = [*self.exits, *([self.client] if self.client is not None else [])]
        return ["--bootstrap", self.relay.dial_addr, *(arg for n in nodes for arg in ("--allow-peer", n.peer_id))]

    def requests(self, log: str = "www.log") -> list[tuple[str, str]]:
        """(source address, path) of every request the web server logged, in order (www6.log: IPv6's)."""
        try:
            text = (self.workdir / log).read_text(errors="replace")
        except OSError:
            return []
        return [(m[1], m[2]) for line in text.splitlines() if (m := _LOG_RE.match(line))]

    def curl(self, url: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """curl from the client's namespace; never raises (exit code 124 when our bound hit)."""
        assert self.client is not None
        argv = ["curl", "-sS", "--max-time", f"{timeout:g}", *args, url]
        try:
            return self.client.host.run(*argv, check=False, timeout=timeout + 5)
        except LabError as exc:
            return subprocess.CompletedProcess(argv, 124, "", str(exc))

    def exits_view(self, timeout: float = 3.0) -> dict[str, Any]:
        assert self.client is not None
        return client.request(self.client.control_path, "exits", timeout=timeout)

    def current_exit(self) -> str | None:
        try:
            return self.exits_view(timeout=2).get("current")  # type: ignore[no-any-return]
        except ControlError:
            return None

    def exit_by_id(self, peer_id: str) -> LabNode:
        return next(e for e in self.exits if e.peer_id == peer_id)

    def exit_net_ip(self, node: LabNode) -> str:
        return EXIT_NET_IPS[self.exits.index(node)]

    def exit_net6_ip(self, node: LabNode) -> str:
        return EXIT_NET6_IPS[self.exits.index(node)]


def _add_v6(host: Host, address: str, iface: str) -> None:
    """A 2001:db8:: address, usable at once (nodad: no duplicate address detection wait)."""
    host.run("ip", "-6", "addr", "add", f"{address}/{NET6_PREFIXLEN}", "dev", iface, "nodad")


def snapshot(host: Host) -> dict[str, str]:
    """What --use-exit must leave as it found: policy rules, every routing table, the nft ruleset."""
    out = {}
    for name, argv in (
        ("rules4", ("ip", "-4", "rule", "show")), ("rules6", ("ip", "-6", "rule", "show")),
        ("routes4", ("ip", "-4", "route", "show", "table", "all")),
        ("routes6", ("ip", "-6", "route", "show", "table", "all")),
        ("nft", ("nft", "list", "ruleset")),
        ("src_valid_mark", ("sysctl", "-n", "net.ipv4.conf.all.src_valid_mark")),
    ):  # fmt: skip
        out[name] = host.run(*argv).stdout
    return out


def counters(node: LabNode) -> dict[str, dict[str, int]]:
    """The exit's nft counters as ``p2pvpn status`` reports them ({} if it does not answer)."""
    try:
        return (node.status(timeout=2).get("exit") or {}).get("counters", {})  # type: ignore[no-any-return]
    except ControlError:
        return {}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
