"""Signed node records: who a peer is, where to dial it, which roles it offers.

This module is the whole record format of the private DHT (docs/protocol.md,
"Node records and the DHT"). Like ``p2pvpn.wire.codec`` it is sans-IO: bytes
and ``now`` in, typed records or :class:`RecordError` out; the DHT code around
it only moves bytes.

Theory of operation
-------------------
A node describes itself in a :class:`NodeRecord` (proto/records.proto): its
peer ID, network, overlay addresses, the multiaddrs to dial it on, and the
relay / exit roles it offers. :func:`seal` serializes the record and wraps it
in a libp2p signed envelope (libp2p RFC 0002, go-libp2p ``core/record``):
the signature covers ``uvarint(len(domain)) domain uvarint(len(type)) type
uvarint(len(payload)) payload`` with our own domain and payload type, so a
record can never be confused with a signature made for another purpose. The
envelope is stored in the DHT under :func:`record_key`; peers announce
themselves as providers of :func:`provider_key` for each role they take.

Reading is split in two so that each half is a pure function:
:func:`open_sealed` checks everything the bytes alone can prove (size,
protobuf structure, limits, signature, signer == ``record.peer_id``), and
:func:`check` checks what depends on the reader (network, clock, the key the
record was stored under, the overlay addresses derived from the peer ID, or,
in a network with an owner, the certificate the record carries: docs/protocol.md
§15.9.4).
:class:`RecordValidator` plugs both into py-libp2p's KadDHT, which calls
``validate`` on every value it stores or fetches and ``select`` to keep the
best of several (highest ``seq``).

Every size, count and string is bounded, and hostile bytes raise
:class:`RecordError` and nothing else (tests/discovery fuzz this). The
generated ``records_pb2`` types never leave this module.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeAlias

import base58
from google.protobuf.message import DecodeError
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyType, PrivateKey
from libp2p.peer.id import ID
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator
from multiaddr import Multiaddr
from multiaddr.exceptions import Error as MultiaddrLibError
from nacl.exceptions import CryptoError

from p2pvpn import addressing
from p2pvpn.discovery import records_pb2 as _pb
from p2pvpn.errors import P2pvpnError
from p2pvpn.membership import cert as _cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_EXIT, ROLE_RELAY

__all__ = [
    "DEFAULT_TTL",
    "DOMAIN",
    "KEY_NAMESPACE",
    "MAX_ADDRS",
    "MAX_ADDR_LEN",
    "MAX_KEY_LEN",
    "MAX_POLICY_ENTRIES",
    "MAX_POLICY_ENTRY_LEN",
    "MAX_RECORD_SIZE",
    "MAX_TTL",
    "PAYLOAD_TYPE",
    "ROLES",
    "CertificateRecordError",
    "ExitRole",
    "NodeRecord",
    "PolicyEntry",
    "RecordError",
    "RecordValidator",
    "RelayRole",
    "check",
    "make_record",
    "open_sealed",
    "parse_policy_entry",
    "parse_record_key",
    "provider_key",
    "record_key",
    "seal",
    "usable_addrs",
]

DOMAIN = "p2pvpn-node-record"
"""Signature domain: a signature over a record can never pass for another libp2p signature."""
PAYLOAD_TYPE = b"/p2pvpn/node-record/1"
"""``Envelope.payload_type``; go-libp2p: ``record.RegisterType`` with this ``Codec()``."""
KEY_NAMESPACE = "p2pvpn"
"""First component of every DHT key: the namespace our validator is registered for."""
ROLES = ("members", "relay", "exit")
"""Provider keys: every node provides "members", plus each role it offers."""

MAX_RECORD_SIZE = 4096
"""Bytes of a sealed envelope (public key, payload, signature and all)."""
MAX_ADDRS = 16
"""Entries in ``addrs``, and separately in ``relay_addrs``."""
MAX_ADDR_LEN = 512
"""Bytes of one binary multiaddr."""
MAX_POLICY_ENTRIES = 16
"""Entries in ``ExitRole.allow``, and separately in ``ExitRole.deny``."""
MAX_POLICY_ENTRY_LEN = 64
"""Bytes of one exit policy entry."""
MAX_KEY_LEN = 128
"""Bytes of a DHT key: py-libp2p ignores GET_VALUE/PUT_VALUE for longer keys."""
MAX_TTL = 24 * 3600
"""Farthest a record's expiry may lie in the reader's future, seconds."""
DEFAULT_TTL = 300
"""Lifetime the reference implementation gives its records; it republishes at half of it."""

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1
_ED25519_PEER_ID_PREFIX = bytes.fromhex("002408011220")  # identity multihash of PublicKey{Type: Ed25519}
_ED25519_PEER_ID_LEN = len(_ED25519_PEER_ID_PREFIX) + 32
_NETWORK_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BASE58_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{1,64}")


class RecordError(P2pvpnError, InvalidRecordType):
    """A record, envelope or key is malformed, forged, stale or not ours.

    It is also py-libp2p's ``InvalidRecordType``, the error its validators
    raise for a rejected value, so KadDHT treats it like any invalid record.
    """


class CertificateRecordError(RecordError):
    """In a network with an owner: the record has no valid certificate, or claims other addresses than it."""


# --------------------------------------------------------------------------- #
# Records as callers see them.


@dataclass(frozen=True, slots=True)
class RelayRole:
    """Offers circuit relay v2 to members: how many reservations and circuits at once."""

    max_reservations: int
    max_circuits: int


@dataclass(frozen=True, slots=True)
class ExitRole:
    """Offers to route overlay traffic out of the overlay; ``allow``/``deny`` summarise its policy.

    The entries are advisory (the exit enforces its real policy itself); they
    let a node pick an exit that will probably carry its traffic. Format: see
    :func:`parse_policy_entry`; deny wins over allow (:meth:`permits`).
    """

    allow: tuple[str, ...]
    deny: tuple[str, ...] = ()
    capacity_mbit: int = 0
    load_permille: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.allow, str) or isinstance(self.deny, str):
            raise RecordError("exit allow/deny must be sequences of entries, not one string")
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "deny", tuple(self.deny))

    def permits(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        """Whether the advertised policy lets traffic to ``address``:``port`` out (deny wins).

        Raises :class:`RecordError` for a malformed entry (never the case in an opened record).
        """
        if any(parse_policy_entry(entry).matches(address, port) for entry in self.deny):
            return False
        return any(parse_policy_entry(entry).matches(address, port) for entry in self.allow)


Address: TypeAlias = Multiaddr | str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """What a node publishes about itself (proto/records.proto ``NodeRecord``).

    ``addrs`` are listen addresses without ``/p2p``; ``relay_addrs`` are
    ``.../p2p/<relay>/p2p-circuit`` addresses. Strings are parsed into
    ``Multiaddr`` on construction, so a record built from strings equals the
    same record read back (an unparsable string raises :class:`RecordError`
    here). ``relay``/``exit`` are ``None`` when the role is off. ``expires``
    is Unix seconds. ``certificate`` is the node's ``SignedCertificate`` in a
    network with an owner (docs/protocol.md §15.9.4), empty otherwise.
    Nothing else is validated on construction: :func:`seal` and :func:`check`
    do that. Fields are keyword-only.
    """

    peer_id: ID
    network: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    address_index: int = 0
    addrs: tuple[Address, ...] = ()
    relay_addrs: tuple[Address, ...] = ()
    relay: RelayRole | None = None
    exit: ExitRole | None = None
    certificate: bytes = b""
    seq: int
    expires: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "addrs", tuple(map(_to_multiaddr, self.addrs)))
        object.__setattr__(self, "relay_addrs", tuple(map(_to_multiaddr, self.relay_addrs)))


def _to_multiaddr(addr: Address) -> Multiaddr:
    if isinstance(addr, Multiaddr):
        return addr
    try:
        return Multiaddr(addr)
    except (MultiaddrLibError, ValueError, TypeError):
        raise RecordError(f"{addr!r} is not a multiaddr") from None


def make_record(
    peer_id: ID,
    network: str,
    *,
    seq: int,
    now: float,
    ttl: int = DEFAULT_TTL,
    address_index: int = 0,
    addrs: Iterable[Address] = (),
    relay_addrs: Iterable[Address] = (),
    relay: RelayRole | None = None,
    exit: ExitRole | None = None,
    certificate: bytes = b"",
) -> NodeRecord:
    """A record with the overlay addresses derived from ``peer_id`` and expiry ``now + ttl``.

    ``address_index`` is the first IPv4 candidate to try (docs/protocol.md
    §3.1); the record carries the one actually used. With a ``certificate``
    (a network with an owner) the record carries it and its addresses instead.
    """
    derived = addressing.derive(peer_id.to_bytes(), network, address_index)
    ipv4, ipv6 = derived.ipv4, derived.ipv6
    if certificate:
        try:
            opened = _cert.open_certificate(certificate, network)
        except MembershipError as exc:
            raise CertificateRecordError(f"record certificate: {exc}") from None
        ipv4, ipv6 = opened.ipv4, opened.ipv6
    return NodeRecord(
        peer_id=peer_id,
        network=network,
        ipv4=ipv4,
        ipv6=ipv6,
        address_index=derived.index,
        addrs=tuple(addrs),
        relay_addrs=tuple(relay_addrs),
        relay=relay,
        exit=exit,
        certificate=certificate,
        seq=seq,
        expires=int(now) + ttl,
    )


# --------------------------------------------------------------------------- #
# DHT keys.


def _check_network(network: object) -> str:
    if not isinstance(network, str) or not _NETWORK_RE.fullmatch(network):
        raise RecordError(f"network name {network!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return network


def _is_ed25519_peer(raw: bytes) -> bool:
    return len(raw) == _ED25519_PEER_ID_LEN and raw.startswith(_ED25519_PEER_ID_PREFIX)


def _check_peer(what: str, peer_id: object) -> ID:
    if not isinstance(peer_id, ID):
        raise RecordError(f"{what} must be a peer ID, got {type(peer_id).__name__}")
    if not _is_ed25519_peer(peer_id.to_bytes()):
        raise RecordError(f"{what} {peer_id} is not an Ed25519 peer ID")
    return peer_id


def record_key(network: str, peer_id: ID) -> str:
    """DHT key of ``peer_id``'s record: ``/p2pvpn/<network>/node/<peer-id base58>``."""
    _check_network(network)
    _check_peer("record key peer", peer_id)
    key = f"/{KEY_NAMESPACE}/{network}/node/{peer_id.to_base58()}"
    if len(key) > MAX_KEY_LEN:
        raise RecordError(
            f"network name {network!r} is too long for a DHT key ({len(key)} > {MAX_KEY_LEN} bytes); "
            f"use at most {MAX_KEY_LEN - len(key) + len(network)} characters"
        )
    return key


def parse_record_key(key: str) -> tuple[str, ID]:
    """``(network, peer_id)`` of a record key; :class:`RecordError` if it is not one of ours."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN:
        raise RecordError("not a p2pvpn record key (wrong type or too long)")
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "" or parts[1] != KEY_NAMESPACE or parts[3] != "node":
        raise RecordError(f"{key!r} is not a p2pvpn record key (/{KEY_NAMESPACE}/<network>/node/<peer-id>)")
    network = _check_network(parts[2])
    text = parts[4]
    if not _BASE58_RE.fullmatch(text):
        raise RecordError(f"record key {key!r} does not end in a base58 peer ID")
    raw = base58.b58decode(text)
    if not _is_ed25519_peer(raw):
        raise RecordError(f"record key {key!r} does not name an Ed25519 peer ID")
    peer_id = ID(raw)
    if peer_id.to_base58() != text:  # leading '1's are zero bytes: only one spelling is ours
        raise RecordError(f"record key {key!r} spells its peer ID non-canonically")
    return network, peer_id


def provider_key(network: str, role: str) -> str:
    """Provider key of ``role`` in ``network``, as the hex of a sha2-256 multihash.

    ``0x12 0x20 || SHA-256("/p2pvpn/<network>/<role>")``: py-libp2p's
    ``KadDHT.provide``/``find_providers`` take this hex string; go-libp2p
    uses the same multihash as a CIDv1 (raw codec).
    """
    _check_network(network)
    if role not in ROLES:
        raise RecordError(f"role {role!r} must be one of {', '.join(ROLES)}")
    digest = hashlib.sha256(f"/{KEY_NAMESPACE}/{network}/{role}".encode()).digest()
    return (b"\x12\x20" + digest).hex()


# --------------------------------------------------------------------------- #
# Multiaddrs: a small, exact grammar, so that every implementation accepts the
# same records (docs/protocol.md lists it).

_IP4, _TCP, _DNS, _DNS4, _DNS6, _IP6, _UDP, _P2P_CIRCUIT, _P2P, _QUIC_V1 = 4, 6, 53, 54, 55, 41, 273, 290, 421, 461
_FIXED_SIZE = {_IP4: 4, _IP6: 16, _TCP: 2, _UDP: 2, _QUIC_V1: 0, _P2P_CIRCUIT: 0}
_VAR_SIZE = frozenset({_DNS, _DNS4, _DNS6, _P2P})
_HOSTS = frozenset({_IP4, _IP6, _DNS, _DNS4, _DNS6})
_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_DNS_LEN = 253


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """A minimal uvarint of at most 2 bytes (all our codes and lengths are < 16384)."""
    if pos >= len(buf):
        raise RecordError("multiaddr is truncated")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    if pos + 1 >= len(buf):
        raise RecordError("multiaddr is truncated")
    second = buf[pos + 1]
    if second == 0 or second >= 0x80:
        raise RecordError("multiaddr holds a non-minimal or oversized varint")
    return (first & 0x7F) | (second << 7), pos + 2


def _components(raw: bytes) -> list[tuple[int, bytes, int]]:
    """``(code, value, start offset)`` of each component of a binary multiaddr we accept."""
    out: list[tuple[int, bytes, int]] = []
    pos = 0
    while pos < len(raw):
        start = pos
        code, pos = _read_uvarint(raw, pos)
        if code in _FIXED_SIZE:
            size = _FIXED_SIZE[code]
        elif code in _VAR_SIZE:
            size, pos = _read_uvarint(raw, pos)
        else:
            raise RecordError(f"multiaddr uses protocol code {code}, which node records do not allow")
        if pos + size > len(raw):
            raise RecordError("multiaddr is truncated")
        out.append((code, raw[pos : pos + size], start))
        pos += size
    return out


def _check_host(code: int, value: bytes) -> None:
    if code == _IP4:
        if value == bytes(4):
            raise RecordError("multiaddr has the unspecified address 0.0.0.0")
    elif code == _IP6:
        if value == bytes(16):
            raise RecordError("multiaddr has the unspecified address ::")
    else:
        try:
            name = value.decode("ascii")
        except UnicodeDecodeError:
            raise RecordError("multiaddr DNS name is not ASCII") from None
        labels = name.split(".")
        if (
            not 0 < len(name) <= _MAX_DNS_LEN
            or not all(_DNS_LABEL_RE.fullmatch(label) and label[2:4] != "--" for label in labels)
        ):
            raise RecordError(f"multiaddr DNS name {name!r} is not a plain LDH host name")


def _check_p2p(value: bytes) -> None:
    """A peer ID multihash: identity of 1..42 bytes, or sha2-256."""
    if len(value) >= 2 and value[0] == 0x00 and value[1] == len(value) - 2 and 0 < value[1] <= 42:
        return
    if len(value) == 34 and value[:2] == b"\x12\x20":
        return
    raise RecordError("multiaddr /p2p value is not a peer ID multihash")


def _check_addr(raw: bytes, *, relay: bool) -> None:
    """Listen: host (/tcp/P | /udp/P/quic-v1). Relay: the same + /p2p/<relay>/p2p-circuit."""
    what = "relay address" if relay else "address"
    if len(raw) > MAX_ADDR_LEN:
        raise RecordError(f"{what} is {len(raw)} bytes, over the {MAX_ADDR_LEN}-byte limit")
    parts = _components(raw)
    codes = [code for code, _, _ in parts]
    if not codes or codes[0] not in _HOSTS:
        raise RecordError(f"{what} must start with /ip4, /ip6, /dns, /dns4 or /dns6")
    _check_host(codes[0], parts[0][1])
    if codes[1:2] == [_TCP]:
        rest = codes[2:]
    elif codes[1:3] == [_UDP, _QUIC_V1]:
        rest = codes[3:]
    else:
        raise RecordError(f"{what} must continue with /tcp/<port> or /udp/<port>/quic-v1")
    if parts[1][1] == b"\x00\x00":
        raise RecordError(f"{what} has port 0")
    if relay:
        if rest != [_P2P, _P2P_CIRCUIT]:
            raise RecordError(f"{what} must end with /p2p/<relay peer ID>/p2p-circuit")
        _check_p2p(parts[-2][1])
    elif rest:
        raise RecordError(f"{what} must be host + transport only (no /p2p, no circuit)")


def _addr_bytes(addr: Address) -> bytes:
    raw: bytes = _to_multiaddr(addr).to_bytes()
    return raw


def _addr_from_bytes(raw: bytes, *, relay: bool) -> Multiaddr:
    _check_addr(raw, relay=relay)
    try:
        return Multiaddr(raw)
    except (MultiaddrLibError, ValueError):  # our grammar is meant to be a subset of the library's
        raise RecordError("multiaddr could not be decoded") from None


def dialable(addr: Address, allow_loopback: bool = False) -> bool:
    """Whether an address learnt from a record may be dialed, judged by its IP's scope.

    Never: unspecified, link-local, multicast or limited broadcast (they
    cannot name the publisher), nor loopback (it names *our* host, so a
    record could point every member at their own local services) unless
    ``allow_loopback``: a node that itself listens only on loopback, where
    every member shares the host (tests, a single-host setup). A DNS name
    is judged by whoever resolves it. For a relay address the relay's IP
    is judged.
    """
    try:
        parts = _components(_addr_bytes(addr))
    except (RecordError, MultiaddrLibError, ValueError):
        return False
    if not parts or parts[0][0] not in (_IP4, _IP6):
        return bool(parts)
    ip = ipaddress.ip_address(parts[0][1])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return False
    return allow_loopback or not ip.is_loopback


def usable_addrs(addrs: Iterable[Address]) -> tuple[Multiaddr, ...]:
    """The addresses a record may carry, from a host's listen addresses.

    Strips a trailing ``/p2p/<id>``, drops anything outside the record
    grammar (unspecified IPs, other transports) and duplicates, and keeps
    at most MAX_ADDRS, so that :func:`seal` accepts the result.
    """
    out: dict[bytes, Multiaddr] = {}
    for addr in addrs:
        try:
            raw = _addr_bytes(addr)
            parts = _components(raw)
            if parts and parts[-1][0] == _P2P:
                raw = raw[: parts[-1][2]]
            out.setdefault(raw, _addr_from_bytes(raw, relay=False))
        except RecordError:
            continue
        if len(out) == MAX_ADDRS:
            break
    return tuple(out.values())


# --------------------------------------------------------------------------- #
# Exit policy entries.


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """One parsed exit policy entry: a prefix and port ranges (empty = every port)."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ports: tuple[tuple[int, int], ...] = ()

    def matches(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        if address.version != self.network.version or address not in self.network:
            return False
        return not self.ports or any(low <= port <= high for low, high in self.ports)


_POLICY_RE = re.compile(
    r"(?:(?P<v4>(?:[0-9]{1,3}\.){3}[0-9]{1,3}/(?:0|[1-9][0-9]?))"
    r"|\[(?P<v6>[0-9A-Fa-f:.]{2,45}/(?:0|[1-9][0-9]{0,2}))\])"
    r"(?::(?P<ports>\*|[0-9]{1,5}(?:-[0-9]{1,5})?(?:,[0-9]{1,5}(?:-[0-9]{1,5})?)*))?"
)


def parse_policy_entry(entry: str) -> PolicyEntry:
    """Parse ``PREFIX[:PORTS]``: ``10.0.0.0/8``, ``0.0.0.0/0:*``, ``[2000::/3]:80,443,8000-8999``.

    IPv4 prefixes are written bare, IPv6 ones in brackets; the prefix must
    have no host bits set. PORTS is ``*`` (the default) or a comma list of
    ports and ``low-high`` ranges, each in 1..65535 without leading zeros.
    """
    if not isinstance(entry, str) or len(entry.encode("utf-8", "replace")) > MAX_POLICY_ENTRY_LEN:
        raise RecordError(f"exit policy entry {entry!r} is not a string of at most {MAX_POLICY_ENTRY_LEN} bytes")
    match = _POLICY_RE.fullmatch(entry)
    if match is None:
        raise RecordError(f"exit policy entry {entry!r} is not PREFIX[:PORTS]")
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    try:
        if match["v4"] is not None:
            network = ipaddress.IPv4Network(match["v4"])
        else:
            network = ipaddress.IPv6Network(match["v6"])
    except ValueError:
        raise RecordError(f"exit policy entry {entry!r} has an invalid prefix (host bits set?)") from None
    ports: list[tuple[int, int]] = []
    if match["ports"] not in (None, "*"):
        for item in match["ports"].split(","):
            low_text, _, high_text = item.partition("-")
            bounds = (low_text, high_text or low_text)
            if any(text.startswith("0") for text in bounds):
                raise RecordError(f"exit policy entry {entry!r} has a port of 0 or with leading zeros")
            low, high = map(int, bounds)
            if not low <= high <= 65535:
                raise RecordError(f"exit policy entry {entry!r} has a port range outside 1..65535 or reversed")
            ports.append((low, high))
    return PolicyEntry(network, tuple(ports))


# --------------------------------------------------------------------------- #
# Field checks shared by seal, open_sealed and check.


def _check_uint(what: str, value: object, maximum: int) -> None:
    if type(value) is not int or not 0 <= value <= maximum:
        raise RecordError(f"{what} must be an integer in 0..{maximum}, got {value!r}")


def _check_fields(record: NodeRecord) -> None:
    """Everything about a record that needs no key, clock or network to judge."""
    if not isinstance(record, NodeRecord):
        raise RecordError(f"not a NodeRecord: {type(record).__name__}")
    _check_peer("record peer_id", record.peer_id)
    _check_network(record.network)
    if not isinstance(record.ipv4, ipaddress.IPv4Address):
        raise RecordError(f"record ipv4 must be an IPv4Address, got {record.ipv4!r}")
    if not isinstance(record.ipv6, ipaddress.IPv6Address):
        raise RecordError(f"record ipv6 must be an IPv6Address, got {record.ipv6!r}")
    _check_uint("record address_index", record.address_index, addressing.MAX_ADDRESS_INDEX)
    _check_uint("record seq", record.seq, _UINT64_MAX)
    if not isinstance(record.certificate, bytes) or len(record.certificate) > _cert.MAX_CERT_SIZE:
        raise RecordError(f"record certificate must be at most {_cert.MAX_CERT_SIZE} bytes")
    _check_uint("record expires", record.expires, _UINT64_MAX)
    for name, addrs, relay in (("addrs", record.addrs, False), ("relay_addrs", record.relay_addrs, True)):
        if len(addrs) > MAX_ADDRS:
            raise RecordError(f"record has {len(addrs)} {name}, over the limit of {MAX_ADDRS}")
        for addr in addrs:
            _check_addr(_addr_bytes(addr), relay=relay)
    if record.relay is not None:
        if not isinstance(record.relay, RelayRole):
            raise RecordError(f"record relay must be a RelayRole or None, got {record.relay!r}")
        _check_uint("relay max_reservations", record.relay.max_reservations, _UINT32_MAX)
        _check_uint("relay max_circuits", record.relay.max_circuits, _UINT32_MAX)
    if record.exit is not None:
        exit_role = record.exit
        if not isinstance(exit_role, ExitRole):
            raise RecordError(f"record exit must be an ExitRole or None, got {exit_role!r}")
        for name, entries in (("allow", exit_role.allow), ("deny", exit_role.deny)):
            if len(entries) > MAX_POLICY_ENTRIES:
                raise RecordError(f"exit {name} has {len(entries)} entries, over the limit of {MAX_POLICY_ENTRIES}")
            for entry in entries:
                parse_policy_entry(entry)
        _check_uint("exit capacity_mbit", exit_role.capacity_mbit, _UINT32_MAX)
        _check_uint("exit load_permille", exit_role.load_permille, 1000)


# --------------------------------------------------------------------------- #
# Sealing and opening.


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _signing_bytes(payload: bytes) -> bytes:
    """What the envelope signature covers (libp2p RFC 0002)."""
    domain = DOMAIN.encode()
    return b"".join(
        (_uvarint(len(domain)), domain, _uvarint(len(PAYLOAD_TYPE)), PAYLOAD_TYPE, _uvarint(len(payload)), payload)
    )


def _record_to_pb(record: NodeRecord) -> _pb.NodeRecord:
    message = _pb.NodeRecord(
        peer_id=record.peer_id.to_bytes(),
        network=record.network,
        seq=record.seq,
        expires_unix=record.expires,
        ipv4=record.ipv4.packed,
        ipv6=record.ipv6.packed,
        address_index=record.address_index,
        addrs=[_addr_bytes(addr) for addr in record.addrs],
        relay_addrs=[_addr_bytes(addr) for addr in record.relay_addrs],
        certificate=record.certificate,
    )
    if record.relay is not None:
        message.relay.max_reservations = record.relay.max_reservations
        message.relay.max_circuits = record.relay.max_circuits
        message.relay.SetInParent()  # an all-zero role is still "on": it must be on the wire
    if record.exit is not None:
        message.exit.allow.extend(record.exit.allow)
        message.exit.deny.extend(record.exit.deny)
        message.exit.capacity_mbit = record.exit.capacity_mbit
        message.exit.load_permille = record.exit.load_permille
        message.exit.SetInParent()
    return message


def _seal_payload(payload: bytes, private_key: PrivateKey) -> bytes:
    """Envelope bytes around ``payload``, signed by ``private_key`` (no checks: tests forge with it)."""
    public = private_key.get_public_key().to_bytes()
    envelope = _pb.Envelope(
        public_key=_pb.PublicKey(type=_pb.Ed25519, data=public),
        payload_type=PAYLOAD_TYPE,
        payload=payload,
        signature=private_key.sign(_signing_bytes(payload)),
    )
    return envelope.SerializeToString()


def seal(record: NodeRecord, private_key: PrivateKey) -> bytes:
    """Sign ``record`` with the peer's own Ed25519 key: the bytes to store in the DHT.

    Refuses (:class:`RecordError`) anything :func:`open_sealed` would reject:
    a bad field, a key that is not ``record.peer_id``'s, an oversized result.
    Time and overlay addresses are :func:`check`'s business.
    """
    if private_key.get_type() != KeyType.Ed25519:
        raise RecordError(f"records are signed with Ed25519 keys, not {private_key.get_type().name}")
    _check_fields(record)
    signer = ID(_ED25519_PEER_ID_PREFIX + private_key.get_public_key().to_bytes())
    if signer != record.peer_id:
        raise RecordError(f"record is for peer {record.peer_id} but the key belongs to {signer}")
    sealed = _seal_payload(_record_to_pb(record).SerializeToString(), private_key)
    if len(sealed) > MAX_RECORD_SIZE:
        raise RecordError(f"sealed record is {len(sealed)} bytes, over the {MAX_RECORD_SIZE}-byte limit")
    return sealed


def _verify(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    try:
        return Ed25519PublicKey.from_bytes(public_key).verify(_signing_bytes(payload), signature)
    except (CryptoError, ValueError, TypeError):  # PyNaCl's way of refusing a malformed key
        return False


def open_sealed(data: bytes) -> NodeRecord:
    """Parse and verify a sealed record; :class:`RecordError` for anything wrong.

    Checks the size, the envelope structure, that the key is Ed25519, the
    payload type, the signature (over our domain), the record's fields and
    limits, and that the signer's peer ID is ``record.peer_id``. Does not
    check the network, expiry or overlay addresses (see :func:`check`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RecordError(f"a sealed record is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_RECORD_SIZE:
        raise RecordError(f"sealed record is {len(data)} bytes, over the {MAX_RECORD_SIZE}-byte limit")
    try:
        envelope = _pb.Envelope.FromString(data)
    except DecodeError:
        raise RecordError(f"{len(data)} bytes are not a signed envelope") from None
    if not envelope.HasField("public_key"):
        raise RecordError("envelope carries no public key")
    if envelope.public_key.type != _pb.Ed25519 or len(envelope.public_key.data) != 32:
        raise RecordError("envelope key is not an Ed25519 public key")
    if envelope.payload_type != PAYLOAD_TYPE:
        raise RecordError(f"envelope payload type is {envelope.payload_type[:64]!r}, not {PAYLOAD_TYPE!r}")
    public_key = envelope.public_key.data
    if len(envelope.signature) != 64 or not _verify(public_key, envelope.payload, envelope.signature):
        raise RecordError("envelope signature does not verify")
    try:
        message = _pb.NodeRecord.FromString(envelope.payload)
    except DecodeError:
        raise RecordError("signed payload is not a NodeRecord") from None
    record = _record_from_pb(message)
    signer = ID(_ED25519_PEER_ID_PREFIX + public_key)
    if record.peer_id != signer:
        raise RecordError(f"record is for peer {record.peer_id} but was signed by {signer}")
    return record


def _record_from_pb(message: _pb.NodeRecord) -> NodeRecord:
    if not _is_ed25519_peer(message.peer_id):
        raise RecordError("record peer_id is not an Ed25519 peer ID")
    _check_network(message.network)
    if len(message.ipv4) != 4:
        raise RecordError(f"record ipv4 is {len(message.ipv4)} bytes, expected 4")
    if len(message.ipv6) != 16:
        raise RecordError(f"record ipv6 is {len(message.ipv6)} bytes, expected 16")
    if len(message.addrs) > MAX_ADDRS or len(message.relay_addrs) > MAX_ADDRS:
        raise RecordError(f"record has more than {MAX_ADDRS} addrs or relay_addrs")
    relay = None
    if message.HasField("relay"):
        relay = RelayRole(message.relay.max_reservations, message.relay.max_circuits)
    exit_role = None
    if message.HasField("exit"):
        exit_role = ExitRole(
            allow=tuple(message.exit.allow),
            deny=tuple(message.exit.deny),
            capacity_mbit=message.exit.capacity_mbit,
            load_permille=message.exit.load_permille,
        )
    record = NodeRecord(
        peer_id=ID(message.peer_id),
        network=message.network,
        ipv4=ipaddress.IPv4Address(message.ipv4),
        ipv6=ipaddress.IPv6Address(message.ipv6),
        address_index=message.address_index,
        addrs=tuple(_addr_from_bytes(raw, relay=False) for raw in message.addrs),
        relay_addrs=tuple(_addr_from_bytes(raw, relay=True) for raw in message.relay_addrs),
        relay=relay,
        exit=exit_role,
        certificate=message.certificate,
        seq=message.seq,
        expires=message.expires_unix,
    )
    _check_fields(record)
    return record


def check(
    record: NodeRecord,
    *,
    network: str,
    now: float,
    key_peer: ID | None = None,
    revocations: Mapping[bytes, int] | None = None,
    cert_now: float | None = None,
) -> NodeRecord:
    """Whether an (opened) record is acceptable to a reader in ``network`` at ``now``; the record as it counts.

    ``key_peer`` is the peer named by the DHT key the record came from; the
    record must be that peer's. Then: same network, ``now < expires <= now +
    MAX_TTL``, the limits, and overlay addresses the peer may claim. Raises
    :class:`RecordError` naming the first failure.

    ``revocations`` is None in a network without owner: the addresses must be
    the derivation from the peer ID (docs/protocol.md §12.7 step 9). In a
    network with an owner it is the reader's revocation set (maybe empty):
    the record must carry a certificate valid for its peer at ``cert_now``
    (default ``now``), claim exactly the certificate's addresses, and its
    relay/exit roles count only if the certificate has those bits: the
    returned record has the others removed (§15.9.4).
    """
    _check_fields(record)
    if key_peer is not None and record.peer_id != key_peer:
        raise RecordError(f"record is for peer {record.peer_id}, but was stored under {key_peer}'s key")
    if record.network != network:
        raise RecordError(f"record is for network {record.network!r}, not {network!r}")
    if record.expires <= now:
        raise RecordError(f"record of {record.peer_id} expired {now - record.expires:.0f} s ago")
    if record.expires > now + MAX_TTL:
        raise RecordError(f"record of {record.peer_id} expires more than {MAX_TTL} s from now")
    if revocations is not None:
        return _check_certified(record, network, now if cert_now is None else cert_now, revocations)
    peer_bytes = record.peer_id.to_bytes()
    ipv4, used = addressing.derive_ipv4(peer_bytes, network, record.address_index)
    if used != record.address_index or ipv4 != record.ipv4:
        raise RecordError(
            f"record of {record.peer_id} claims {record.ipv4} (index {record.address_index}), "
            f"but its peer ID gives {ipv4} (index {used})"
        )
    ipv6 = addressing.derive_ipv6(peer_bytes, network)
    if ipv6 != record.ipv6:
        raise RecordError(f"record of {record.peer_id} claims {record.ipv6}, but its peer ID gives {ipv6}")
    return record


def _check_certified(record: NodeRecord, network: str, now: float, revocations: Mapping[bytes, int]) -> NodeRecord:
    """§15.9.4: a valid certificate of the record's peer decides its addresses and which roles count."""
    if not record.certificate:
        raise CertificateRecordError(f"record of {record.peer_id} carries no certificate, and {network} has an owner")
    try:
        certificate = _cert.verify(record.certificate, network, now, revocations, record.peer_id.to_bytes())
    except MembershipError as exc:
        raise CertificateRecordError(f"record of {record.peer_id}: {exc}") from None
    if (record.ipv4, record.ipv6) != (certificate.ipv4, certificate.ipv6):
        raise CertificateRecordError(
            f"record of {record.peer_id} claims {record.ipv4} and {record.ipv6}, "
            f"but its certificate gives {certificate.ipv4} and {certificate.ipv6}"
        )
    relay = record.relay if certificate.has_role(ROLE_RELAY) else None
    exit_role = record.exit if certificate.has_role(ROLE_EXIT) else None
    if (relay, exit_role) != (record.relay, record.exit):
        return replace(record, relay=relay, exit=exit_role)
    return record


# --------------------------------------------------------------------------- #
# The DHT's view.


class RecordValidator(Validator):
    """KadDHT validator for the "p2pvpn" namespace: only valid records of our network.

    KadDHT calls ``validate`` before storing a PUT_VALUE and on every value a
    GET_VALUE query returns, and ``select`` to rank competing values (index
    0 keeps the stored one). Register it with
    ``NamespacedValidator({"p2pvpn": RecordValidator(network)}, strict_validation=True)``.

    In a network with an owner, ``revocations`` returns the reader's current
    revocation set and records need a valid certificate (:func:`check`),
    judged at ``cert_clock`` (the membership clock). ``rejected`` counts
    refused values by reason: "certificate" (none, invalid, revoked,
    expired, or other addresses than the certificate's) and "invalid".
    """

    def __init__(
        self,
        network: str,
        clock: Callable[[], float] = time.time,
        revocations: Callable[[], Mapping[bytes, int]] | None = None,
        cert_clock: Callable[[], float] | None = None,
    ) -> None:
        self.network = _check_network(network)
        self._clock = clock
        self._revocations = revocations
        self._cert_clock = cert_clock or clock
        self.rejected: Counter[str] = Counter()

    @property
    def owned(self) -> bool:
        """Whether records need certificates here (a network with an owner)."""
        return self._revocations is not None

    def open(self, key_peer: ID, value: bytes, now: float | None = None) -> NodeRecord:
        """The record in ``value`` as it counts for us (:func:`check`), or :class:`RecordError` (counted)."""
        return self._open(key_peer, value, self._clock() if now is None else now)

    def _open(self, key_peer: ID, value: bytes, now: float) -> NodeRecord:
        try:
            record = open_sealed(value)
            revocations = self._revocations() if self._revocations is not None else None
            return check(record, network=self.network, now=now, key_peer=key_peer, revocations=revocations,
                         cert_now=self._cert_clock() if revocations is not None else None)
        except CertificateRecordError:
            self.rejected["certificate"] += 1
            raise
        except RecordError:
            self.rejected["invalid"] += 1
            raise

    def _key_peer(self, key: str) -> ID:
        network, peer_id = parse_record_key(key)
        if network != self.network:
            raise RecordError(f"record key is for network {network!r}, not {self.network!r}")
        return peer_id

    def validate(self, key: str, value: bytes) -> None:
        """Raise :class:`RecordError` (an ``InvalidRecordType``) unless ``value`` is a valid record for ``key``."""
        self._open(self._key_peer(key), value, self._clock())

    def select(self, key: str, values: list[bytes]) -> int:
        """Index of the best valid value: highest seq, then latest expiry, then largest bytes.

        Invalid values are never chosen; among identical values the first
        wins, so KadDHT keeps what it already has. Raises
        :class:`RecordError` if no value is valid.
        """
        key_peer = self._key_peer(key)
        now = self._clock()
        best: int | None = None
        best_rank: tuple[int, int, bytes] | None = None
        for index, value in enumerate(values):
            try:
                record = self._open(key_peer, value, now)
            except RecordError:
                continue
            rank = (record.seq, record.expires, bytes(value))
            if best_rank is None or rank > best_rank:
                best, best_rank = index, rank
        if best is None:
            raise RecordError(f"none of the {len(values)} values for {key} is a valid record")
        return best
