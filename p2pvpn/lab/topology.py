"""Network-namespace topologies for the lab demo, end-to-end tests and benchmarks.

Theory of operation
-------------------
Every node of a topology is a Linux network namespace named
``<prefix>-<name>``; the prefix carries a random run id (``p2v3fa9c``), so
parallel or crashed runs never collide. A :class:`Host` is a namespace with
its own interfaces; a :class:`Switch` is a namespace holding one bridge
(``br0``). Veth pairs are created directly inside the two namespaces they
join, so nothing ever lives in the root namespace and no namespace is ever
linked to the machine's real interfaces::

    host a                  switch lan                 host b
    eth0 198.18.1.1 ──veth── p0-a  br0  p1-b ──veth── eth0 198.18.1.2

Deleting a namespace deletes everything inside it (veths, qdiscs, nft
tables), so teardown is: stop the processes we started, delete every
namespace with our prefix, check that none is left. :class:`Topology` is a
context manager doing exactly that, also after a partial setup or an
exception inside the ``with`` block.

Underlay addresses are refused unless they lie in 198.18.0.0/15 (RFC 2544
benchmarking) or 203.0.113.0/24 (a simulated "internet"), so a mistyped
subnet can never send test traffic anywhere real.

A :class:`Router` is a host namespace that forwards between a "LAN"
interface and a "WAN" interface and hides the LAN behind the WAN address
with nftables masquerade (:meth:`Topology.add_nat`), like a home router::

    host a                router nat1                         switch wan
    eth0 198.18.10.2 ──── lan 198.18.10.1   wan 198.18.0.1 ──── br0 ── relay, other NATs
         default via .1        masquerade out of wan

Its mapping is either endpoint-independent (``"eim"``: Linux keeps the
source port when it can, so one inside socket has one outside port for
every destination: hole punching works) or random per connection
(``"random"``: ``masquerade fully-random``, a symmetric NAT for our
purposes: hole punching fails). Either way unsolicited packets from the
WAN are dropped, not refused, as home routers do.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from p2pvpn.errors import P2pvpnError

UNDERLAY_NETS = (
    ipaddress.IPv4Network("198.18.0.0/15"),
    ipaddress.IPv4Network("203.0.113.0/24"),
)
IFNAMSIZ = 15  # longest Linux interface name
CMD_TIMEOUT = 30.0  # default bound for one setup command
STOP_TIMEOUT = 5.0  # SIGTERM grace before SIGKILL in close()
BRIDGE = "br0"

_PREFIX_RE = re.compile(r"[a-z0-9]{1,10}")
# Node names stay short so derived interface names ("p12-<name>") fit IFNAMSIZ.
_NODE_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
_IFACE_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]{0,14}")
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)([kmg]?)bit")
_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


class LabError(P2pvpnError):
    """A namespace, link or tool in the lab could not be set up or torn down."""


def new_prefix() -> str:
    """Return a fresh ``p2v<5 hex>`` prefix, unique enough for parallel runs."""
    return "p2v" + secrets.token_hex(3)[:5]


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT, **kw: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run with captured text output and one-line errors."""
    if "stdout" not in kw and "stderr" not in kw:
        kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    cmd = shlex.join(argv)
    try:
        result = subprocess.run(list(argv), timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{cmd}` timed out after {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"`{argv[0]}` is not installed") from exc
    if check and result.returncode != 0:
        err = result.stderr if isinstance(result.stderr, str) else ""
        first = err.strip().splitlines()[0] if err.strip() else "no error output"
        raise LabError(f"`{cmd}` failed (exit {result.returncode}): {first}")
    return result


def list_netns() -> list[str]:
    """Names of all network namespaces known to ``ip netns``."""
    out = _run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def leftovers(prefix: str, dirs: Iterable[Path] = ()) -> list[str]:
    """Everything named with ``prefix`` that still exists on this machine: namespaces, links, nft tables,
    processes, and those of ``dirs`` that exist. A lab that tore down cleanly leaves none."""
    found = [f"netns {ns}" for ns in list_netns() if ns.startswith(prefix)]
    links = json.loads(_run(["ip", "-j", "link", "show"], check=False).stdout or "[]")
    found += [f"link {link['ifname']}" for link in links if prefix in link.get("ifname", "")]
    tables = json.loads(_run(["nft", "-j", "list", "tables"], check=False).stdout or '{"nftables": []}')["nftables"]
    found += [f"nft table {t['table']['name']}" for t in tables if "table" in t and prefix in t["table"]["name"]]
    found += [f"dir {d}" for d in dirs if d.exists()]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if prefix in cmdline:
            found.append(f"process {proc.name}: {cmdline[:120]}")
    return found


# Where each program the labs and tests use comes from on Debian/Ubuntu.
TOOL_PACKAGES = {
    "ip": "iproute2", "tc": "iproute2", "ss": "iproute2", "nft": "nftables", "ping": "iputils-ping",
    "iperf3": "iperf3", "tcpdump": "tcpdump", "curl": "curl", "setpriv": "util-linux", "go": "golang",
}


def require_netns(*tools: str) -> str | None:
    """Return why namespace tests cannot run here, or None if they can.

    ``tools`` are extra programs the caller needs (e.g. ``"iperf3"``).
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        return f"/dev/net/tun is unusable: {exc.strerror}"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            package = TOOL_PACKAGES.get(tool)
            return f"`{tool}` is not installed" + (f" (Debian/Ubuntu package: {package})" if package else "")
    probe = f"{new_prefix()}-probe"
    try:
        _run(["ip", "netns", "add", probe], timeout=10)
    except LabError as exc:
        return f"`ip netns` is unusable: {exc}"
    try:
        _run(["ip", "netns", "del", probe], timeout=10)
    except LabError as exc:
        return f"`ip netns del` is unusable: {exc}"
    return None


def parse_rate(rate: str) -> int:
    """``"200mbit"`` -> 200_000_000 bits/s (tc's decimal units)."""
    match = _RATE_RE.fullmatch(rate.strip().lower())
    if match is None:
        raise ValueError(f"rate {rate!r} is not like '200mbit' or '1gbit'")
    bits = int(float(match.group(1)) * _RATE_UNITS[match.group(2)])
    if bits <= 0:
        raise ValueError(f"rate {rate!r} must be positive")
    return bits


def _check_underlay(net: ipaddress.IPv4Network) -> None:
    """Refuse any subnet outside the lab's reserved underlay ranges."""
    if not any(net.subnet_of(allowed) for allowed in UNDERLAY_NETS):
        allowed_s = ", ".join(str(n) for n in UNDERLAY_NETS)
        raise ValueError(f"subnet {net} is outside the lab ranges ({allowed_s})")


def _check_iface(iface: str) -> None:
    if not _IFACE_RE.fullmatch(iface):
        raise ValueError(f"interface name {iface!r} is invalid or longer than {IFNAMSIZ}")


class Netns:
    """One network namespace of a topology; base of hosts, switches and routers."""

    def __init__(self, topo: Topology, name: str) -> None:
        if not _NODE_RE.fullmatch(name):
            raise ValueError(f"node name {name!r} must match {_NODE_RE.pattern}")
        self.name = name
        self.netns = f"{topo.prefix}-{name}"
        self.ifaces: dict[str, str] = {}  # interface -> "address/prefixlen" ("" if none)
        self._topo = topo
        self._loss_table = f"{topo.prefix}_loss"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.netns!r})"

    def run(
        self, *argv: str, check: bool = True, timeout: float = CMD_TIMEOUT, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run a command inside this namespace and wait for it (bounded)."""
        return _run(["ip", "netns", "exec", self.netns, *argv], check=check, timeout=timeout, **kw)

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a command inside this namespace; Topology.close() stops it if still running.

        It gets its own session (process group) so stopping it also stops its children.
        """
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kw)
        self._topo._track(proc, own_group=bool(kw["start_new_session"]))
        return proc

    def shape(self, iface: str, rate: str = "1gbit") -> None:
        """Limit egress of ``iface`` to ``rate`` with a token bucket (tc tbf).

        The burst holds 4 ms at line rate but at least two 64 KiB GSO packets,
        so veth's segmentation offload does not throttle the bucket; the queue
        holds 10 ms, enough for TCP to fill the rate without bufferbloat.
        """
        bits = parse_rate(rate)
        burst = max(bits // 8 * 4 // 1000, 2 * 65536)
        self.run(
            "tc", "qdisc", "replace", "dev", iface, "root", "tbf",
            "rate", rate, "burst", str(burst), "latency", "10ms",
        )  # fmt: skip

    def add_ingress_loss(self, per_mille: int, iface: str | None = None) -> None:
        """Drop ``per_mille``/1000 of IPv4/IPv6 packets arriving in this namespace.

        An nft table hooked at prerouting, priority -300 (before conntrack),
        counts every packet it sees and every packet it drops; see
        :meth:`ingress_counters`. Give ``iface`` to spare packets that arrive
        on other interfaces (e.g. a VPN's TUN in the same namespace). Calling
        again replaces the rule and resets the counters.
        """
        if not 0 <= per_mille <= 1000:
            raise ValueError(f"per_mille must be within 0..1000, not {per_mille}")
        match = ""
        if iface is not None:
            _check_iface(iface)
            match = f'iifname "{iface}" '
        # nft refuses "< 1000" (numgen values are 0..999), so dropping all is its own rule.
        chance = f"numgen random mod 1000 < {per_mille} " if per_mille < 1000 else ""
        table = self._loss_table
        script = (
            f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n"
            f"  counter seen {{}}\n"
            f"  counter dropped {{}}\n"
            f"  chain ingress {{\n"
            f"    type filter hook prerouting priority -300; policy accept;\n"
            f'    {match}counter name "seen"\n'
            f'    {match}{chance}counter name "dropped" drop\n'
            f"  }}\n"
            f"}}\n"
        )
        self.run("nft", "-f", "-", input=script)

    def ingress_counters(self) -> tuple[int, int]:
        """(packets seen, packets dropped) by the ingress-loss table."""
        out = self.run("nft", "-j", "list", "table", "inet", self._loss_table).stdout
        counters = {
            item["counter"]["name"]: int(item["counter"]["packets"])
            for item in json.loads(out)["nftables"]
            if "counter" in item
        }
        return counters["seen"], counters["dropped"]

    def add_route(self, dest: str, via: str) -> None:
        """Add a route (``dest`` may be ``default``); later NAT topologies need it."""
        self.run("ip", "route", "replace", dest, "via", via)

    def wait_listening(self, port: int, *, udp: bool = False, timeout: float = 10.0) -> None:
        """Wait until something listens on ``port`` here; LabError after ``timeout`` s."""
        flag = "-Hlun" if udp else "-Hltn"
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):  # bounded in count and time
            if self.run("ss", flag, f"sport = :{port}").stdout.strip():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise LabError(f"nothing listens on port {port} in {self.netns} after {timeout:g} s")

    def _add_veth_end(self, iface: str, address: ipaddress.IPv4Interface | None) -> None:
        """Configure our end of a freshly created veth: address (optional) and up."""
        if address is not None:
            self.run("ip", "addr", "add", str(address), "dev", iface)
        self.run("ip", "link", "set", iface, "up")
        self.ifaces[iface] = str(address) if address is not None else ""


_N = TypeVar("_N", bound=Netns)


class Host(Netns):
    """A namespace standing for one machine; the VPN node runs in it."""

    def address(self, iface: str = "eth0") -> str:
        """The underlay address of ``iface`` without prefix length."""
        return self.ifaces[iface].split("/")[0]


class Switch(Netns):
    """A namespace joining hosts of one subnet: a bridge (a LAN segment), or a router (``routed``).

    Why routed: the kernel's IPv4 neighbour table is one table for all
    namespaces (``net.ipv4.neigh.default.gc_thresh3``, 1024 entries by
    default). On a bridge every host keeps an entry for every host it talks
    to, so 50 hosts in a mesh need ~2,500 entries, the table overflows
    ("neighbor table overflow!" in the kernel log) and packets are dropped
    before any qdisc sees them. A routed switch gives each host one /32 and
    one neighbour (the switch), and the switch one neighbour per host.
    """

    def __init__(self, topo: Topology, name: str, subnet: str, routed: bool = False) -> None:
        super().__init__(topo, name)
        self.subnet = ipaddress.IPv4Network(subnet)
        _check_underlay(self.subnet)
        self._used: set[ipaddress.IPv4Address] = set()
        self._ports = 0
        self.routed = routed
        self.gateway: ipaddress.IPv4Address | None = None
        if routed:  # the switch's own address on every port: the subnet's last host address
            self.gateway = self.claim(str(self.subnet.broadcast_address - 1)).ip

    def claim(self, address: str | None) -> ipaddress.IPv4Interface:
        """Reserve ``address`` (or the lowest free one) in this switch's subnet."""
        if address is None:
            free = (a for a in self.subnet.hosts() if a not in self._used)
            ip = next(free, None)
            if ip is None:
                raise LabError(f"subnet {self.subnet} of switch {self.name} is full")
        else:
            ip = ipaddress.IPv4Interface(address).ip
            if ip not in self.subnet or ip in (self.subnet.network_address, self.subnet.broadcast_address):
                raise ValueError(f"{address} is not a host address of {self.subnet}")
            if ip in self._used:
                raise ValueError(f"{address} is already used on switch {self.name}")
        self._used.add(ip)
        return ipaddress.IPv4Interface(f"{ip}/{self.subnet.prefixlen}")

    def next_port(self, host: Netns) -> str:
        """A bridge-port name unique inside this switch, e.g. ``p3-alice``."""
        port = f"p{self._ports}-{host.name}"[:IFNAMSIZ]
        self._ports += 1
        return port


NAT_MAPPINGS = ("eim", "random")


class Router(Host):
    """A host forwarding between ``lan`` and ``wan``, masquerading the LAN (see the module doc)."""

    def __init__(self, topo: Topology, name: str, lan_subnet: ipaddress.IPv4Network) -> None:
        super().__init__(topo, name)
        self.lan_subnet = lan_subnet
        self.mapping = "eim"
        self._nat_table = f"{topo.prefix}_nat"

    def set_mapping(self, mapping: str) -> None:
        """(Re)load the NAT rules with ``mapping``; translations already made keep their ports."""
        if mapping not in NAT_MAPPINGS:
            raise ValueError(f"mapping {mapping!r} is not one of {', '.join(NAT_MAPPINGS)}")
        flags = " fully-random" if mapping == "random" else ""
        table = self._nat_table
        script = (
            f"table ip {table} {{}}\n"
            f"delete table ip {table}\n"
            f"table ip {table} {{\n"
            f"  chain postrouting {{\n"
            f"    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "wan" masquerade{flags}\n'
            f"  }}\n"
            f"  chain forward {{\n"
            f"    type filter hook forward priority filter; policy drop;\n"
            f"    ct state established,related accept\n"
            f'    iifname "lan" oifname "wan" accept\n'
            f"  }}\n"
            f"  chain input {{\n"
            f"    type filter hook input priority filter; policy accept;\n"
            f'    iifname "wan" ct state established,related accept\n'
            f'    iifname "wan" drop\n'
            f"  }}\n"
            f"}}\n"
        )
        self.run("nft", "-f", "-", input=script)
        self.mapping = mapping


class Topology:
    """A set of namespaces joined by veths; ``with Topology() as t:`` tears all down."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else new_prefix()
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must match {_PREFIX_RE.pattern}")
        self.nodes: dict[str, Netns] = {}
        self._procs: list[tuple[subprocess.Popen[Any], bool]] = []
        self._closed = False

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- building ---------------------------------------------------------

    def add_host(self, name: str) -> Host:
        """Create a host namespace with loopback up."""
        return self._create(Host(self, name))

    def add_switch(self, name: str, subnet: str, routed: bool = False) -> Switch:
        """Create a switch namespace for ``subnet`` (a lab range): an up bridge, or a router if ``routed``.

        Use ``routed`` for many hosts: see :class:`Switch` (neighbour table).
        """
        switch = self._create(Switch(self, name, subnet, routed))
        if routed:
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                        "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.all.send_redirects=0"):  # fmt: skip
                switch.run("sysctl", "-qw", key)
            return switch
        switch.run("ip", "link", "add", BRIDGE, "type", "bridge")
        switch.run("ip", "link", "set", BRIDGE, "up")
        return switch

    def add_nat(
        self, name: str, wan: Switch, lan_subnet: str, mapping: str = "eim", wan_address: str | None = None
    ) -> Router:
        """A NAT router on switch ``wan`` whose LAN is ``lan_subnet`` (its first address is the router's).

        Hosts join the LAN with :meth:`behind`. ``mapping`` is ``"eim"`` or ``"random"``.
        """
        net = ipaddress.IPv4Network(lan_subnet)
        _check_underlay(net)
        router = self._create(Router(self, name, net))
        self.attach(router, wan, wan_address, iface="wan")
        router.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        router.set_mapping(mapping)
        return router

    def behind(self, host: Host, router: Router, iface: str = "eth0") -> str:
        """Put ``host`` on ``router``'s LAN (a veth to the router's ``lan``), default route via the router."""
        self._check_new_iface(host, iface)
        if "lan" in router.ifaces:
            raise LabError(f"router {router.name} already has a host on its LAN (one host per NAT)")
        net = router.lan_subnet
        hosts = itertools.islice(net.hosts(), 2)
        gateway, address = (ipaddress.IPv4Interface(f"{ip}/{net.prefixlen}") for ip in hosts)
        self._veth(router, "lan", host, iface)
        router._add_veth_end("lan", gateway)
        host._add_veth_end(iface, address)
        host.add_route("default", str(gateway.ip))
        return str(address.ip)

    def attach(
        self, host: Host, switch: Switch, address: str | None = None, iface: str = "eth0"
    ) -> str:
        """Plug ``host`` into ``switch`` by a veth; return the host's address.

        Without ``address`` the lowest free address of the switch's subnet is used.
        """
        self._check_new_iface(host, iface)
        addr = switch.claim(address)
        port = switch.next_port(host)
        self._veth(host, iface, switch, port)
        if switch.gateway is None:
            switch.run("ip", "link", "set", port, "master", BRIDGE)
            switch._add_veth_end(port, None)
            host._add_veth_end(iface, addr)
            return str(addr.ip)
        gateway = str(switch.gateway)
        switch._add_veth_end(port, ipaddress.IPv4Interface(f"{gateway}/32"))
        switch.run("ip", "route", "replace", f"{addr.ip}/32", "dev", port)
        host._add_veth_end(iface, ipaddress.IPv4Interface(f"{addr.ip}/32"))
        host.run("ip", "route", "replace", str(switch.subnet), "via", gateway, "dev", iface, "onlink")
        return str(addr.ip)

    def link(
        self,
        a: Host,
        b: Host,
        subnet: str,
        iface_a: str | None = None,
        iface_b: str | None = None,
    ) -> tuple[str, str]:
        """Join two hosts point-to-point; they get the first two addresses of ``subnet``.

        Interfaces default to ``to-<peer name>``.
        """
        net = ipaddress.IPv4Network(subnet)
        _check_underlay(net)
        hosts = list(itertools.islice(net.hosts(), 2))
        if len(hosts) < 2:
            raise ValueError(f"subnet {net} has fewer than two host addresses")
        iface_a = iface_a or f"to-{b.name}"
        iface_b = iface_b or f"to-{a.name}"
        self._check_new_iface(a, iface_a)
        self._check_new_iface(b, iface_b)
        addr_a = ipaddress.IPv4Interface(f"{hosts[0]}/{net.prefixlen}")
        addr_b = ipaddress.IPv4Interface(f"{hosts[1]}/{net.prefixlen}")
        self._veth(a, iface_a, b, iface_b)
        a._add_veth_end(iface_a, addr_a)
        b._add_veth_end(iface_b, addr_b)
        return str(addr_a.ip), str(addr_b.ip)

    # -- teardown ---------------------------------------------------------

    def close(self) -> None:
        """Stop our processes, delete every ``<prefix>-*`` namespace, verify they are gone.

        Safe to call twice and after a partial setup; raises LabError if a
        namespace survives.
        """
        if self._closed:
            return
        self._closed = True
        self._stop_processes()
        ours = [ns for ns in list_netns() if ns.startswith(f"{self.prefix}-")]
        for ns in ours:
            _run(["ip", "netns", "del", ns], check=False)
        left = [ns for ns in list_netns() if ns.startswith(f"{self.prefix}-")]
        if left:
            raise LabError(f"namespaces left after teardown: {', '.join(left)}")

    # -- internals --------------------------------------------------------

    def _create(self, node: _N) -> _N:
        if node.name in self.nodes:
            raise ValueError(f"node {node.name!r} already exists")
        if self._closed:
            raise LabError("topology is already closed")
        _run(["ip", "netns", "add", node.netns])
        self.nodes[node.name] = node
        node.run("ip", "link", "set", "lo", "up")
        return node

    def _check_new_iface(self, node: Netns, iface: str) -> None:
        _check_iface(iface)
        if iface in node.ifaces:
            raise ValueError(f"{node.name} already has an interface {iface!r}")

    def _veth(self, a: Netns, iface_a: str, b: Netns, iface_b: str) -> None:
        """Create a veth pair whose ends are born inside ``a`` and ``b`` (never in the root ns)."""
        _run([
            "ip", "link", "add", iface_a, "netns", a.netns,
            "type", "veth", "peer", "name", iface_b, "netns", b.netns,
        ])  # fmt: skip

    def _track(self, proc: subprocess.Popen[Any], own_group: bool) -> None:
        self._procs.append((proc, own_group))

    def _stop_processes(self) -> None:
        """SIGTERM what still runs, SIGKILL it after STOP_TIMEOUT; close its pipes.

        Signals go to a process group only while its leader is unreaped, so the
        group id cannot have been reused by an unrelated process.
        """
        running = [(p, g) for p, g in self._procs if p.poll() is None]
        for proc, own_group in running:
            self._signal(proc, own_group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc, own_group in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, own_group, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        for proc, _ in self._procs:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    @staticmethod
    def _signal(proc: subprocess.Popen[Any], own_group: bool, sig: signal.Signals) -> None:
        try:
            if own_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
