"""The exit's edge: IP forwarding on, one nftables table of ours, counters and load.

Flow of a packet leaving through this exit: a client's packet arrives in
its tunnel, passes the usual source check (p2pvpn.dataplane.ingress) and is
written to our TUN; the kernel routes it (forwarding is on) to the uplink;
our table's ``forward`` chain applies the policy (refused packets get an
ICMP administratively-prohibited and a named counter), and ``postrouting``
masquerades the overlay source to the uplink's address. Replies are
un-NATed by conntrack to the client's overlay address, routed into the
TUN, and the session manager's route table carries them to the client.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pvpn.exit import nft
from p2pvpn.exit.nft import ExitSetupError, ExitTable
from p2pvpn.exit.policy import ExitPolicy
from p2pvpn.exit.sysctl import SysctlChanges

log = logging.getLogger(__name__)

FORWARDING = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
STATE_FILE = "exit-sysctl.json"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ExitSetupError(f"{what} needs root (it changes forwarding, routes and nftables)")


class ExitGateway:
    """Forwarding and the exit table for one node, for the duration of :meth:`running`."""

    def __init__(self, peer_id: bytes, tun: str, policy: ExitPolicy, directory: Path,
                 rate_limit_mbit: int = 0) -> None:
        self.table = ExitTable(nft.table_name("exit", peer_id), tun, policy, rate_limit_mbit * 125)
        self.sysctls = SysctlChanges(directory / STATE_FILE)
        self._last: tuple[float, int] | None = None

    @contextmanager
    def running(self) -> Iterator[ExitGateway]:
        require_root("--exit")
        nft.require_nft()
        if self.sysctls.recover() | nft.delete_table(self.table.name):
            log.warning("cleaned up after an earlier exit run that did not stop cleanly")
        try:
            self.sysctls.apply(FORWARDING)
            nft.apply(nft.render_exit_table(self.table))
            log.info("exit: forwarding on, nftables table %s loaded", self.table.name)
            yield self
        finally:
            try:
                nft.delete_table(self.table.name)
            finally:
                self.sysctls.restore()
            log.info("exit: table %s removed, forwarding settings restored", self.table.name)

    def counters(self) -> dict[str, dict[str, int]]:
        return nft.read_counters(self.table.name)

    def throughput_mbit(self) -> float:
        """Mbit/s forwarded (both directions) since the previous call (0 on the first)."""
        counters = self.counters()
        total = sum(counters.get(name, {}).get("bytes", 0) for name in ("forwarded", "returned"))
        now = time.monotonic()
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0]:
            return 0.0
        return max(0, total - last[1]) * 8 / (now - last[0]) / 1e6


def load_permille(throughput_mbit: float, capacity_mbit: int) -> int:
    """Load as published: forwarded rate over advertised capacity (0 when no capacity is stated)."""
    if capacity_mbit <= 0:
        return 0
    return min(1000, round(throughput_mbit / capacity_mbit * 1000))
