"""nftables for the exit role: scripts rendered from plain data (sans-IO), and the few ``nft`` calls.

Every table p2pvpn creates is one ``inet`` table with a name derived from
the node's peer ID, so a node only ever creates, reads and deletes its own
table and never touches another rule on the machine:

* ``p2pvpn_exit_<id8>`` on an exit: the policy for packets arriving from
  the TUN (forwarded, and delivered to the host itself), named counters,
  masquerade of overlay sources out of every other interface
  (:func:`render_exit_table`);
* ``p2pvpn_client_<id8>`` on a client using an exit: copies the socket mark
  of our own underlay connections to conntrack and back, so replies pass a
  strict reverse-path filter (:func:`render_client_table`).

``<id8>`` is the first 8 hex digits of SHA-256 of the peer ID bytes. A
script always starts by creating the table empty and deleting it, so
loading it replaces a table left by a crashed run atomically (nft applies
a script as one transaction).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from p2pvpn.discovery.record import PolicyEntry
from p2pvpn.errors import P2pvpnError
from p2pvpn.exit.policy import ExitPolicy, IPNetwork

REJECT = "reject with icmpx admin-prohibited"
NFT_TIMEOUT = 10.0
COUNTERS = ("forwarded", "returned", "denied", "not_allowed", "overlay", "rate_limited", "host_denied")
"""Named counters of the exit table: what was let out, what came back, and why the rest was refused.

``host_denied``: packets from the overlay to the exit host itself (input),
other than to its own overlay addresses: its LAN and underlay addresses,
loopback services bound to 0.0.0.0, and so on.
"""


class ExitSetupError(P2pvpnError):
    """Forwarding, nftables or policy routing for the exit role could not be set up."""


def table_name(kind: str, peer_id: bytes) -> str:
    """``p2pvpn_<kind>_<8 hex>``: unique per node, stable across restarts (how a stale table is found)."""
    return f"p2pvpn_{kind}_{hashlib.sha256(peer_id).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class ExitTable:
    """Everything the exit table depends on."""

    name: str
    tun: str
    policy: ExitPolicy
    rate_limit_kbytes: int = 0  # per client and direction, kilobytes/s; 0 = none


def _match(net: IPNetwork) -> str:
    family = "ip" if net.version == 4 else "ip6"
    if net.prefixlen == 0:
        return f"meta nfproto {'ipv4' if net.version == 4 else 'ipv6'}"
    return f"{family} daddr {net}"


def _entry_match(entry: PolicyEntry) -> str:
    text = _match(entry.network)
    if entry.ports:
        ports = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in entry.ports)
        text += f" meta l4proto {{ tcp, udp }} th dport {{ {ports} }}"
    return text


def render_exit_table(table: ExitTable) -> str:
    """The exit's whole table as one ``nft -f`` script (replaces an older table of the same name)."""
    name, tun, policy = table.name, _quote(table.tun), table.policy
    v4 = [n for n in policy.overlay if n.version == 4]
    v6 = [n for n in policy.overlay if n.version == 6]
    lines = [f"table inet {name} {{}}", f"delete table inet {name}", f"table inet {name} {{"]
    for counter in COUNTERS:
        lines.append(f"  counter {counter} {{ }}")
    limited = table.rate_limit_kbytes > 0
    if limited:
        for direction in ("up", "down"):
            lines.append(f"  set {direction}4 {{ type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }}")
            lines.append(f"  set {direction}6 {{ type ipv6_addr; size 65535; flags dynamic,timeout; timeout 1m; }}")
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {tun} jump from_overlay",
        f"    oifname {tun} jump to_overlay",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {tun} jump to_host",
        "  }",
        # From the overlay the host itself is reachable on its overlay addresses only: the only
        # local addresses inside the overlay prefixes are ours, so "in the overlay" is enough.
        "  chain to_host {",
        *(f"    {_match(net)} return" for net in policy.overlay),
        f"    counter name host_denied {REJECT}",
        "  }",
        "  chain from_overlay {",
    ]
    # The overlay first: never forwarded, whatever allow says.
    for net in policy.overlay:
        lines.append(f"    {_match(net)} counter name overlay {REJECT}")
    for entry in policy.deny_entries:
        lines.append(f"    {_entry_match(entry)} counter name denied {REJECT}")
    if limited:
        rate = f"limit rate over {table.rate_limit_kbytes} kbytes/second"
        lines.append(f"    update @up4 {{ ip saddr {rate} }} counter name rate_limited drop")
        lines.append(f"    update @up6 {{ ip6 saddr {rate} }} counter name rate_limited drop")
    for entry in policy.allow_entries:
        lines.append(f"    {_entry_match(entry)} counter name forwarded accept")
    lines += [
        f"    counter name not_allowed {REJECT}",
        "  }",
        "  chain to_overlay {",
    ]
    if limited:
        rate = f"limit rate over {table.rate_limit_kbytes} kbytes/second"
        lines.append(f"    update @down4 {{ ip daddr {rate} }} counter name rate_limited drop")
        lines.append(f"    update @down6 {{ ip6 daddr {rate} }} counter name rate_limited drop")
    lines += [
        "    counter name returned",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    for net in v4:
        lines.append(f"    iifname {tun} oifname != {tun} ip saddr {net} masquerade")
    for net in v6:
        lines.append(f"    iifname {tun} oifname != {tun} ip6 saddr {net} masquerade")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def render_client_table(name: str, mark: int) -> str:
    """The client's table: remember our sockets' mark per connection, give it back to replies.

    Outbound packets of our marked sockets store the mark in conntrack;
    inbound packets of those connections get it back before routing, so
    the reverse-path check (with ``src_valid_mark``) looks them up in the
    main table, where the underlay routes are, as wg-quick does.
    """
    return "\n".join([
        f"table inet {name} {{}}",
        f"delete table inet {name}",
        f"table inet {name} {{",
        "  chain premangle {",
        "    type filter hook prerouting priority mangle; policy accept;",
        f"    ct mark {mark:#x} meta mark set ct mark",
        "  }",
        "  chain postmangle {",
        "    type filter hook postrouting priority mangle; policy accept;",
        f"    meta mark {mark:#x} ct mark set meta mark",
        "  }",
        "}",
    ]) + "\n"


def _quote(name: str) -> str:
    return json.dumps(name)  # interface names are [A-Za-z0-9_.-]: a double-quoted string


def parse_counters(nft_json: str) -> dict[str, dict[str, int]]:
    """``nft -j list counters table ...`` -> {name: {"packets": n, "bytes": m}}."""
    data = json.loads(nft_json)
    out: dict[str, dict[str, int]] = {}
    for item in data.get("nftables", []):
        counter = item.get("counter") if isinstance(item, dict) else None
        if counter is not None:
            out[str(counter["name"])] = {"packets": int(counter.get("packets", 0)), "bytes": int(counter.get("bytes", 0))}
    return out


def parse_table_names(nft_json: str, family: str = "inet") -> list[str]:
    """``nft -j list tables`` -> names of the tables of ``family``."""
    data = json.loads(nft_json)
    return [str(item["table"]["name"]) for item in data.get("nftables", [])
            if isinstance(item, dict) and "table" in item and item["table"].get("family") == family]


# -- I/O -----------------------------------------------------------------------


def require_nft() -> str:
    path = shutil.which("nft")
    if path is None:
        raise ExitSetupError("`nft` is not installed (Debian/Ubuntu package: nftables); --exit and --use-exit need it")
    return path


def _nft(args: Sequence[str], script: str | None = None) -> str:
    argv = [require_nft(), *args]
    try:
        result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ExitSetupError(f"`nft {' '.join(args)}` timed out") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no error output"])[0]
        raise ExitSetupError(f"`nft {' '.join(args)}` failed: {first}")
    return result.stdout


def apply(script: str) -> None:
    """Load a script as one transaction."""
    _nft(["-f", "-"], script)


def delete_table(name: str) -> bool:
    """Delete our table if it exists; whether it did."""
    if name not in parse_table_names(_nft(["-j", "list", "tables"])):
        return False
    _nft(["delete", "table", "inet", name])
    return True


def read_counters(name: str) -> dict[str, dict[str, int]]:
    return parse_counters(_nft(["-j", "list", "counters", "table", "inet", name]))


def in_overlay(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: ExitPolicy) -> bool:
    return any(address.version == n.version and address in n for n in policy.overlay)
