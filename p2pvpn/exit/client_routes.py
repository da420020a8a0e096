"""A client's default routes into the TUN, while the node's own connections keep the real routes.

The scheme is wg-quick's (``man wg-quick``, "default route"), for IPv4 and IPv6:

* routing table ``TABLE`` holds one route, ``default dev <tun>``;
* rule ``priority PRIO_SUPPRESS: lookup main suppress_prefixlength 0``:
  the main table decides, except for its default route(s), so the LAN,
  the overlay (100.64.0.0/10 on the TUN) and any specific route still work;
* rule ``priority PRIO_FWMARK: not fwmark MARK lookup TABLE``: what is left
  (the internet) goes into the TUN, unless it carries our mark: the node's
  own sockets are marked (p2pvpn.exit.marking), so libp2p's connections to
  the exit, relays and DHT peers keep using the main table's real default
  route and never loop through the tunnel;
* nftables table ``p2pvpn_client_<id8>`` copies the mark into conntrack and
  back onto replies, and ``net.ipv4.conf.all.src_valid_mark=1`` makes the
  reverse-path filter look replies up with that mark (strict ``rp_filter``
  would otherwise drop replies from peers that are reached by the default
  route).

What is ours is recognisable without any state: the rule priorities, the
table number and the nft table name. On start everything matching them is
removed first (a crashed run's leftovers); on stop exactly what we added is
removed and the sysctl restored, so ``ip rule``, ``ip route show table
all`` and ``nft list ruleset`` read as before.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from p2pvpn.exit import nft
from p2pvpn.exit.forwarding import require_root
from p2pvpn.exit.nft import ExitSetupError
from p2pvpn.exit.sysctl import SysctlChanges

log = logging.getLogger(__name__)

MARK = 0x7032              # "p2": the mark on the node's own underlay sockets
TABLE = 0x7032             # 28722: the routing table holding the default route into the TUN
PRIO_SUPPRESS = TABLE - 2  # 28720: main table without its default routes
PRIO_FWMARK = TABLE - 1    # 28721: unmarked traffic to TABLE
STATE_FILE = "client-sysctl.json"
IP_TIMEOUT = 10.0


def require_ip() -> str:
    ip = shutil.which("ip")
    if ip is None:
        raise ExitSetupError("`ip` is not installed (Debian/Ubuntu package: iproute2); --use-exit needs it")
    return ip


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = require_ip()
    try:
        result = subprocess.run([ip, *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ExitSetupError(f"`ip {' '.join(args)}` timed out") from None
    if check and result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no error output"])[0]
        raise ExitSetupError(f"`ip {' '.join(args)}` failed: {first}")
    return result


def _json(args: Sequence[str]) -> list[dict[str, object]]:
    result = _ip("-j", *args, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []  # e.g. "FIB table does not exist": nothing of ours there
    data = json.loads(result.stdout)
    return data if isinstance(data, list) else []


def our_rules(family: str) -> list[int]:
    """Priorities of the rules we own in ``family`` (-4 or -6)."""
    return [int(r["priority"]) for r in _json([family, "rule", "show"])  # type: ignore[call-overload]
            if r.get("priority") in (PRIO_SUPPRESS, PRIO_FWMARK)]


def remove(nft_table: str) -> bool:
    """Remove every rule, route and nft table of ours; whether anything was there."""
    found = False
    for family in ("-4", "-6"):
        for priority in our_rules(family):
            _ip(family, "rule", "del", "priority", str(priority))
            found = True
        if _json([family, "route", "show", "table", str(TABLE)]):
            _ip(family, "route", "flush", "table", str(TABLE))
            found = True
    if shutil.which("nft") is not None:
        found |= nft.delete_table(nft_table)
    return found


class ClientRoutes:
    """The default routes into ``tun`` and the rules around them, for the duration of :meth:`installed`."""

    def __init__(self, peer_id: bytes, tun: str, directory: Path) -> None:
        self.tun = tun
        self.nft_table = nft.table_name("client", peer_id)
        self.sysctls = SysctlChanges(directory / STATE_FILE)

    @contextmanager
    def installed(self) -> Iterator[ClientRoutes]:
        require_root("--use-exit")
        nft.require_nft()
        if self.sysctls.recover() | remove(self.nft_table):
            log.warning("removed exit routes and rules left by an earlier run that did not stop cleanly")
        try:
            self.sysctls.apply({"net.ipv4.conf.all.src_valid_mark": "1"})
            nft.apply(nft.render_client_table(self.nft_table, MARK))
            for family in ("-4", "-6"):
                _ip(family, "route", "replace", "default", "dev", self.tun, "table", str(TABLE))
                _ip(family, "rule", "add", "not", "fwmark", hex(MARK), "table", str(TABLE),
                    "priority", str(PRIO_FWMARK))
                _ip(family, "rule", "add", "table", "main", "suppress_prefixlength", "0",
                    "priority", str(PRIO_SUPPRESS))
            log.info("default routes (IPv4, IPv6) now lead into %s; the node's own sockets use mark %#x",
                     self.tun, MARK)
            yield self
        finally:
            try:
                remove(self.nft_table)
            finally:
                self.sysctls.restore()
            log.info("default routes into %s removed", self.tun)
