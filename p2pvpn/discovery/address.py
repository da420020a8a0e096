"""Address records: a member's node record also stored under its overlay addresses (docs/protocol.md §18.2).

Why: a packet for an overlay address we have no route to must find its
member without a list of all members (the "members" provider key holds at
most 20 providers in py-libp2p, and fetching every member's record every
round is work that grows with the network). Each member stores its own
sealed NodeRecord, unchanged, under one key per overlay address; a reader
fetches the one key the packet names. Sans-IO: keys, validation, selection.

Validation is the node record's (§12.7: signature, network, expiry, the
addresses its peer ID or certificate gives) plus: the record claims the
key's address. Of several valid records under one key the one with the
smallest peer ID wins (the collision rule of §12.12), then the node-record
order (§12.8) among that peer's copies.
"""

from __future__ import annotations

import ipaddress

from libp2p.records.validator import Validator

from p2pvpn.discovery import record as rec

ADDRESS_KIND = "addr"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_key(network: str, address: Address) -> str:
    """``/p2pvpn/<network>/addr/<address>``: IPv4 dotted quad, IPv6 in RFC 5952 form (lower case, ``::``)."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise rec.RecordError(f"not an IP address: {address!r}")
    key = f"/{rec.KEY_NAMESPACE}/{network}/{ADDRESS_KIND}/{address.compressed}"
    if len(key) > rec.MAX_KEY_LEN:
        raise rec.RecordError(f"address key {key!r} is longer than {rec.MAX_KEY_LEN} bytes")
    return key


def is_address_key(key: str) -> bool:
    parts = key.split("/") if isinstance(key, str) else []
    return len(parts) == 5 and parts[0] == "" and parts[1] == rec.KEY_NAMESPACE and parts[3] == ADDRESS_KIND


def parse_address_key(key: str) -> tuple[str, Address]:
    """``(network, address)`` of an address key; :class:`RecordError` unless it is one, spelled canonically."""
    if not isinstance(key, str) or len(key) > rec.MAX_KEY_LEN or not is_address_key(key):
        raise rec.RecordError(f"{key!r} is not a p2pvpn address key (/{rec.KEY_NAMESPACE}/<network>/addr/<address>)")
    _, _, network, _, text = key.split("/")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise rec.RecordError(f"address key {key!r} does not end in an IP address") from None
    if address.compressed != text:
        raise rec.RecordError(f"address key {key!r} spells its address non-canonically (use {address.compressed})")
    return network, address


def keys_of(network: str, record: rec.NodeRecord) -> list[str]:
    """The address keys a member stores its record under: its IPv4, then its IPv6."""
    return [address_key(network, record.ipv4), address_key(network, record.ipv6)]


class AddressValidator(Validator):
    """KadDHT validator for address keys, on top of the node-record validator (same clock, same certificates)."""

    def __init__(self, records: rec.RecordValidator) -> None:
        self.records = records

    def open(self, key: str, value: bytes, now: float | None = None) -> rec.NodeRecord:
        """The record under ``key`` as it counts for us; :class:`RecordError` if invalid there."""
        network, address = parse_address_key(key)
        if network != self.records.network:
            raise rec.RecordError(f"address key is for network {network!r}, not {self.records.network!r}")
        record = rec.open_sealed(value)
        opened = self.records.open(record.peer_id, value, now=now)
        if address not in (opened.ipv4, opened.ipv6):
            raise rec.RecordError(f"record of {opened.peer_id} claims {opened.ipv4} and {opened.ipv6}, not {address}")
        return opened

    def validate(self, key: str, value: bytes) -> None:
        self.open(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        """Index of the best valid value: smallest peer ID, then highest seq, latest expiry, largest bytes."""
        best: int | None = None
        best_rank: tuple[bytes, int, int, bytes] | None = None
        for index, value in enumerate(values):
            try:
                record = self.open(key, value)
            except rec.RecordError:
                continue
            # Smaller peer ID first, so its bytes are inverted for a "largest wins" comparison.
            rank = (bytes(255 - b for b in record.peer_id.to_bytes()), record.seq, record.expires, bytes(value))
            if best_rank is None or rank > best_rank:
                best, best_rank = index, rank
        if best is None:
            raise rec.RecordError(f"none of the {len(values)} values for {key} is a valid record")
        return best
