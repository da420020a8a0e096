"""Which names the node answers for: the zone and its members, sans-IO (README "Names, ping and netcheck").

The zone of an owned network is ``<network label>.<suffix>``: the label is
config ``dns_label`` if set, else the network's human-readable name
(``network.json``: from ``network create`` or the invite; a member that
joined with an offline certificate has none) when it is a DNS label
(lowercased). The same names are always also answered under
``<network ID>.<suffix>`` (32 characters, always a DNS label), the one
zone every member can name without knowing the label. Each valid certificate the node knows (its own, those peers
presented on tunnels, those in verified node records) gives one name,
``<certificate name>.<zone>``, with the certificate's two addresses.

Two certificates with one name are a signer's error (docs/protocol.md
§15.8); the table keeps one, deterministically: our own, then one a peer
presented on a live tunnel, then the newest (``not_before``, then peer ID).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.network import is_dns_label
from p2pvpn.names.suffix import DEFAULT_SUFFIX, check_suffix

__all__ = ["DEFAULT_SUFFIX", "MAX_QUERY", "Member", "NameTable", "Zone", "build_table", "check_suffix", "zone_label",
           "zone_name", "zone_names"]

MAX_QUERY = 512  # the responder's bound on a query (bytes); here so the server has it without dnspython
MAX_NAME_WIRE = 255  # RFC 1035: a name's wire form, length octets included


@dataclass(frozen=True, slots=True)
class Zone:
    """A zone's name as text (``lab.internal``), not dnspython's ``dns.name.Name``: a node imports dnspython
    (~3 MiB of RSS with the importlib.metadata it imports) only when its responder answers a first query
    (``p2pvpn.names.responder`` makes the ``dns.name.Name``)."""

    text: str  # DNS labels (a-z 0-9 -), no final dot

    def to_text(self, omit_final_dot: bool = False) -> str:
        """As ``dns.name.Name.to_text``: with the final dot unless ``omit_final_dot``."""
        return self.text if omit_final_dot else f"{self.text}."


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    peer_id: bytes
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address


def zone_label(network_label: str, network_id: str) -> str:
    """The network's label for DNS: its name if that is a DNS label (case folded), else its ID."""
    folded = network_label.strip().lower()
    return folded if is_dns_label(folded) else network_id



def zone_name(network_label: str, network_id: str, suffix: str = DEFAULT_SUFFIX) -> Zone:
    """The zone ``<label>.<suffix>``; ValueError if its wire form is over 255 bytes (as dnspython refuses it)."""
    text = f"{zone_label(network_label, network_id)}.{check_suffix(suffix)}"
    if len(text) + 2 > MAX_NAME_WIRE:  # a length octet per label, the root's zero octet
        raise ValueError(f"the zone name {text!r} is longer than a DNS name can be")
    return Zone(text)


def zone_names(network_label: str, network_id: str, suffix: str = DEFAULT_SUFFIX) -> list[Zone]:
    """The label's zone (when there is a label), then the network ID's."""
    by_id = zone_name("", network_id, suffix)
    labelled = zone_name(network_label, network_id, suffix)
    same = labelled.text.lower() == by_id.text.lower()  # DNS names compare case-insensitively
    return [by_id] if same else [labelled, by_id]


class NameTable:
    """The zone (and its aliases: the same names under other zones) and its members by lowercase name."""

    def __init__(self, zone: Zone, members: Iterable[Member] = (), aliases: Iterable[Zone] = ()) -> None:
        self.zone = zone
        self.zones = (zone, *aliases)
        self.members: dict[str, Member] = {}
        for member in members:  # first wins: callers pass them in order of preference
            self.members.setdefault(member.name.lower(), member)

    def lookup(self, name: str) -> Member | None:
        return self.members.get(name.lower())

    def by_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Member | None:
        for member in self.members.values():
            if address in (member.ipv4, member.ipv6):
                return member
        return None

    def by_peer(self, peer_id: bytes) -> Member | None:
        for member in self.members.values():
            if member.peer_id == peer_id:
                return member
        return None

    def fqdn(self, member: Member) -> str:
        return f"{member.name}.{self.zone.to_text(omit_final_dot=True)}"


def build_table(zones: list[Zone], own: Certificate, presented: Iterable[Certificate],
                recorded: Iterable[Certificate]) -> NameTable:
    """The table from certificates already judged valid, in the preference order of the module docstring."""
    def newest_first(certs: Iterable[Certificate]) -> list[Certificate]:
        return sorted(certs, key=lambda c: (-c.not_before, c.peer_id))

    ordered = [own, *newest_first(presented), *newest_first(recorded)]
    return NameTable(zones[0], (Member(c.name, c.peer_id, c.ipv4, c.ipv6) for c in ordered), zones[1:])
