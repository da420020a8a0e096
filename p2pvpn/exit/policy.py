"""What an exit lets out of the overlay: allow/deny entries, deny wins, checked per packet.

Theory of operation: the policy is the list format of docs/protocol.md
§12.6 (``PREFIX[:PORTS]``, ports for TCP and UDP). A destination leaves
when it matches some ``allow`` entry and no ``deny`` entry; an entry with
ports matches only TCP and UDP packets to those ports, one without ports
matches every protocol. Two kinds of destination never leave, whatever
the configuration says: the overlay itself (100.64.0.0/10 and the
network's ULA /64: peers are reached through their own tunnels, and an
exit must not become a way around the source check). Everything else
that the IANA special-purpose registries (RFC 6890 and its updates) mark
as not globally reachable is kept out by the defaults, which a
configuration may replace (a lab, a company exit into its LAN): IPv4 by
:data:`DEFAULT_DENY`, IPv6 mostly by :data:`DEFAULT_ALLOW` letting out
only global unicast 2000::/3 (a record holds at most 16 entries per list,
too few to list every IPv6 block), the rest of IPv6 by DEFAULT_DENY.

The same object renders the nftables rules that enforce it
(:mod:`p2pvpn.exit.nft`) and the summary published in the exit's record;
:meth:`ExitPolicy.check` is the reference the rules are tested against.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from p2pvpn.addressing import OVERLAY_V4_NET, network_v6_prefix
from p2pvpn.discovery.record import MAX_POLICY_ENTRIES, PolicyEntry, RecordError, parse_policy_entry
from p2pvpn.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TCP = 6
UDP = 17

DEFAULT_ALLOW: tuple[str, ...] = ("0.0.0.0/0", "[2000::/3]")
"""All IPv4 that is not denied; IPv6 global unicast only.

2000::/3 leaves out, without spending deny entries: ::/128, ::1/128,
::ffff:0:0/96 (IPv4-mapped), 64:ff9b::/96 (NAT64: would reach IPv4 around
the IPv4 denies), 64:ff9b:1::/48 (local NAT64), 100::/64 (discard),
5f00::/16 (SRv6), fc00::/7 (unique local, our overlay inside),
fe80::/10 (link-local) and ff00::/8 (multicast).
"""

DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",         # "this network"
    "10.0.0.0/8",        # private (RFC 1918)
    "100.64.0.0/10",     # shared address space / CGNAT (and our overlay)
    "127.0.0.0/8",       # loopback
    "169.254.0.0/16",    # link-local
    "172.16.0.0/12",     # private (RFC 1918)
    "192.0.0.0/24",      # IETF protocol assignments
    "192.0.2.0/24",      # documentation, TEST-NET-1
    "192.168.0.0/16",    # private (RFC 1918)
    "198.18.0.0/15",     # benchmarking (RFC 2544)
    "198.51.100.0/24",   # documentation, TEST-NET-2
    "203.0.113.0/24",    # documentation, TEST-NET-3
    "224.0.0.0/3",       # multicast 224/4, reserved 240/4, limited broadcast
    "[2001::/23]",       # IETF protocol assignments (Teredo, benchmarking 2001:2::/48, ORCHID, ...)
    "[2001:db8::/32]",   # documentation
    "[3fff::/20]",       # documentation (RFC 9637)
)
"""Not globally reachable per the IANA IPv4/IPv6 special-purpose registries (IPv6 outside 2000::/3: DEFAULT_ALLOW).

Exactly MAX_POLICY_ENTRIES (16) entries. Our tests and labs use 198.18.0.0/15
(underlay), 203.0.113.0/24 and 2001:db8::/32 (simulated internet): their
exits set ``exit_deny`` explicitly, replacing this list.
"""


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    DENY = "denied"          # matched a deny entry
    NOT_ALLOWED = "not_allowed"  # matched no allow entry
    OVERLAY = "overlay"      # an overlay destination: never forwarded


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    """An exit's policy: parsed ``allow`` and ``deny`` entries, plus the overlay it never forwards to."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]
    overlay: tuple[IPNetwork, ...]
    allow_entries: tuple[PolicyEntry, ...]
    deny_entries: tuple[PolicyEntry, ...]

    @classmethod
    def build(cls, allow: Sequence[str], deny: Sequence[str], network: str) -> ExitPolicy:
        """Parse the entries (one-line ConfigError naming the bad one) for ``network``'s overlay."""
        parsed: dict[str, list[PolicyEntry]] = {"allow": [], "deny": []}
        for key, entries in (("allow", allow), ("deny", deny)):
            if len(entries) > MAX_POLICY_ENTRIES:
                raise ConfigError(f"exit_{key}: {len(entries)} entries, at most {MAX_POLICY_ENTRIES} "
                                  "(they are published in the node record)")
            for entry in entries:
                try:
                    parsed[key].append(parse_policy_entry(entry))
                except RecordError as exc:
                    raise ConfigError(f"exit_{key}: {exc}") from None
        overlay: tuple[IPNetwork, ...] = (OVERLAY_V4_NET, network_v6_prefix(network))
        return cls(tuple(allow), tuple(deny), overlay, tuple(parsed["allow"]), tuple(parsed["deny"]))

    def check(self, destination: IPAddress, protocol: int, port: int | None) -> Verdict:
        """The verdict for a packet to ``destination`` (``port``: TCP/UDP destination port, else None)."""
        if any(destination.version == net.version and destination in net for net in self.overlay):
            return Verdict.OVERLAY
        if any(_matches(e, destination, protocol, port) for e in self.deny_entries):
            return Verdict.DENY
        if any(_matches(e, destination, protocol, port) for e in self.allow_entries):
            return Verdict.ALLOW
        return Verdict.NOT_ALLOWED

    def summary(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(allow, deny) as published in ExitRole: the configured entries, plus the overlay if room is left.

        The overlay is denied whatever the configuration says; saying so in the
        summary keeps the record honest when ``deny`` was replaced.
        """
        deny = list(self.deny)
        for net in self.overlay:
            covered = any(e.network.version == net.version and net.subnet_of(e.network) and not e.ports  # type: ignore[arg-type]
                          for e in self.deny_entries)
            if not covered and len(deny) < MAX_POLICY_ENTRIES:
                deny.append(_entry_text(net))
        return self.allow, tuple(deny)

    def describe(self) -> dict[str, object]:
        return {"allow": list(self.allow), "deny": list(self.deny),
                "always_denied": [_entry_text(net) for net in self.overlay]}


def _matches(entry: PolicyEntry, destination: IPAddress, protocol: int, port: int | None) -> bool:
    if destination.version != entry.network.version or destination not in entry.network:
        return False
    if not entry.ports:
        return True
    if protocol not in (TCP, UDP) or port is None:
        return False
    return any(low <= port <= high for low, high in entry.ports)


def _entry_text(net: IPNetwork) -> str:
    return str(net) if net.version == 4 else f"[{net}]"
