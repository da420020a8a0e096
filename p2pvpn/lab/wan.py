"""A WAN between two lab hosts: delay, jitter, reordering, loss and a rate, without netem.

This kernel has no sch_netem, so a userspace bridge, ``bench/wanem`` (Go,
AF_PACKET), impairs the frames instead. It runs in a namespace of its own
that holds nothing but the two bridged veth ends::

    host a                   host wan                   host b
    eth0 198.18.0.1 ──veth── wa  [wanem]  wb ──veth── eth0 198.18.0.2
                                a->b: impairment ab
                                b->a: impairment ba

Offloads are off on both hosts' ``eth0`` (``ethtool -K ... tx off tso off
gso off``): a veth otherwise hands the bridge 64 KiB GSO super-frames and
frames with only a partial checksum, which a raw socket cannot forward
as-is. TCP then segments and checksums in software, as it would on a real
NIC-less path. The namespaces, and with them wanem, go when the topology
closes (its teardown is verified); :meth:`WanLink.stop` stops wanem earlier
and returns its counters.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pvpn.lab.topology import Host, LabError, Netns, Topology, _check_underlay

WANEM_DIR = Path(__file__).resolve().parents[2] / "bench" / "wanem"
BUILD_TIMEOUT = 600.0  # a cold module cache downloads golang.org/x/sys first
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
OFFLOADS = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


@dataclass(frozen=True)
class Impairment:
    """What one direction of the WAN does (see bench/wanem/impair.go for the model)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform +-, never reorders by itself
    loss_pct: float = 0.0
    reorder_pct: float = 0.0  # frames held back by reorder_extra_ms so later ones overtake them
    reorder_extra_ms: float = 1.0
    rate: str = "0"  # e.g. "1gbit"; "0" = unlimited

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "reorder_extra_ms"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise ValueError(f"{name} must be within 0..10000")
        for name in ("loss_pct", "reorder_pct"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be within 0..100")


CLEAN = Impairment()


def find_go() -> str | None:
    """The go binary: on PATH, or where the Go tarball installs it."""
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    return str(fallback) if fallback.exists() else None


def build_wanem(out_dir: Path, timeout: float = BUILD_TIMEOUT, source: Path = WANEM_DIR) -> Path:
    """``go build`` bench/wanem (``source``: a checkout's, as an installed package has none) into ``out_dir``.

    LabError with the compiler's tail on failure.
    """
    if not (source / "go.mod").is_file():
        raise LabError(f"no wanem source at {source} (bench/wanem of a p2pvpn checkout)")
    go = find_go()
    if go is None:
        raise LabError("building wanem needs Go: `go` is not on PATH and /usr/local/go/bin/go is missing")
    out = out_dir / "wanem"
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    try:
        res = subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=source, env=env,
                             capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`go build` of {source} took over {timeout:g} s") from exc
    if res.returncode != 0:
        raise LabError(f"`go build` of {source} failed: {res.stderr.strip()[-2000:]}")
    return out


def _ms(value: float) -> str:
    return f"{value:g}ms"


def wanem_argv(ab: Impairment, ba: Impairment, seed: int) -> list[str]:
    """wanem's impairment flags, one ``a->b,b->a`` pair per flag."""
    pairs = {
        "-delay": (_ms(ab.delay_ms), _ms(ba.delay_ms)),
        "-jitter": (_ms(ab.jitter_ms), _ms(ba.jitter_ms)),
        "-loss": (f"{ab.loss_pct:g}", f"{ba.loss_pct:g}"),
        "-reorder": (f"{ab.reorder_pct:g}", f"{ba.reorder_pct:g}"),
        "-reorder-extra": (_ms(ab.reorder_extra_ms), _ms(ba.reorder_extra_ms)),
        "-rate": (ab.rate, ba.rate),
    }
    argv = [arg for flag, (x, y) in pairs.items() for arg in (flag, f"{x},{y}")]
    return [*argv, "-seed", str(seed)]


def offloads_off(host: Netns, iface: str) -> None:
    """Make ``iface`` send MTU-sized frames with full checksums (see the module doc)."""
    if shutil.which("ethtool") is None:
        raise LabError("`ethtool` is not installed (apt package ethtool): the WAN needs offloads off")
    host.run("ethtool", "-K", iface, *OFFLOADS)


class WanLink:
    """Two hosts joined through a ``wan`` namespace running wanem; see the module doc."""

    def __init__(
        self,
        topo: Topology,
        a: Host,
        b: Host,
        wanem: Path,
        subnet: str = "198.18.0.0/24",
        *,
        ab: Impairment = CLEAN,
        ba: Impairment | None = None,
        iface: str = "eth0",
        seed: int = 1,
        name: str = "wan",
    ) -> None:
        net = ipaddress.IPv4Network(subnet)
        _check_underlay(net)
        hosts = list(itertools.islice(net.hosts(), 2))
        if len(hosts) < 2:
            raise ValueError(f"subnet {net} has fewer than two host addresses")
        self.a, self.b = a, b
        self.wan = topo.add_host(name)
        # No addresses and no IPv6 in the middle: it is a wire, not a host.
        self.wan.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.wan.run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        for host, end, address in ((a, "wa", hosts[0]), (b, "wb", hosts[1])):
            topo._check_new_iface(host, iface)
            topo._veth(host, iface, self.wan, end)
            self.wan._add_veth_end(end, None)
            offloads_off(self.wan, end)
            offloads_off(host, iface)
            host._add_veth_end(iface, ipaddress.IPv4Interface(f"{address}/{net.prefixlen}"))
        self.addr_a, self.addr_b = str(hosts[0]), str(hosts[1])
        ba = ab if ba is None else ba
        self.argv = [str(wanem), "-a", "wa", "-b", "wb", *wanem_argv(ab, ba, seed)]
        self.proc = self.wan.popen(*self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.ready = self._read_event("ready", READY_TIMEOUT)

    def _read_event(self, name: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            event = {}
        if event.get("event") != name:
            raise LabError(f"wanem printed no {name!r} line within {timeout:g} s: {self._stderr_tail()}")
        return event

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return (self.proc.stderr.read().strip().splitlines() or ["no output"])[-1]

    def stop(self) -> dict[str, Any]:
        """SIGTERM wanem and return its counters line (see bench/wanem/main.go)."""
        if self.proc.poll() is not None:
            raise LabError(f"wanem exited early ({self.proc.returncode}): {self._stderr_tail()}")
        self.proc.send_signal(signal.SIGTERM)  # `ip netns exec` execs wanem: same process
        deadline = time.monotonic() + STOP_TIMEOUT
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"wanem did not stop within {STOP_TIMEOUT:g} s") from exc
        counters = self._read_event("counters", max(0.1, deadline - time.monotonic()))
        if self.proc.returncode != 0:
            raise LabError(f"wanem exited {self.proc.returncode}: {counters.get('error', self._stderr_tail())}")
        return counters
