"""DHT keys, the multiaddr grammar of records, and exit policy entries."""

from __future__ import annotations

import hashlib
import ipaddress

import base58
import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pvpn.discovery import record as rec
from p2pvpn.discovery.record import (
    MAX_ADDRS,
    MAX_KEY_LEN,
    ExitRole,
    PolicyEntry,
    RecordError,
    parse_policy_entry,
    parse_record_key,
    provider_key,
    record_key,
    usable_addrs,
)

PEER1 = ID.from_pubkey(Ed25519PrivateKey.new(bytes([1]) * 32).get_public_key())
PEER1_TEXT = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
PEER2_TEXT = "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
SHA256_PEER = "QmRQ353oFNqt8zfZ9X1HgRUszwv9RkEEwmMZZkbkYEsybn"  # an RSA-style (hashed) peer ID


# --------------------------------------------------------------------------- #
# Record keys.


def test_record_key_format() -> None:
    key = record_key("default", PEER1)
    assert key == f"/p2pvpn/default/node/{PEER1_TEXT}"
    assert parse_record_key(key) == ("default", PEER1)


def test_longest_network_that_fits_a_key() -> None:
    """py-libp2p drops DHT requests with keys over 128 bytes: 62 characters is the most."""
    assert len(record_key("n" * 62, PEER1)) == MAX_KEY_LEN
    with pytest.raises(RecordError, match="at most 62 characters"):
        record_key("n" * 63, PEER1)


@pytest.mark.parametrize("network", ["", "a/b", "a b", "ü", "x" * 65])
def test_record_key_refuses_bad_network_names(network: str) -> None:
    with pytest.raises(RecordError, match="network name"):
        record_key(network, PEER1)


def test_record_key_refuses_non_ed25519_peers() -> None:
    with pytest.raises(RecordError, match="not an Ed25519 peer ID"):
        record_key("default", ID.from_base58(SHA256_PEER))


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/",
        f"/pk/{PEER1_TEXT}",
        f"/p2pvpn/default/{PEER1_TEXT}",
        f"/p2pvpn/default/node/{PEER1_TEXT}/",
        f"/p2pvpn/default/node/{PEER1_TEXT}/extra",
        f"p2pvpn/default/node/{PEER1_TEXT}",
        f"/P2PVPN/default/node/{PEER1_TEXT}",
        f"/p2pvpn/default/peer/{PEER1_TEXT}",
        f"/p2pvpn//node/{PEER1_TEXT}",
        f"/p2pvpn/a b/node/{PEER1_TEXT}",
        "/p2pvpn/default/node/",
        "/p2pvpn/default/node/0OIl",  # not base58
        f"/p2pvpn/default/node/1{PEER1_TEXT}",  # extra leading zero byte: another spelling
        f"/p2pvpn/default/node/{PEER1_TEXT[:-1]}",  # truncated
        f"/p2pvpn/default/node/{SHA256_PEER}",
        f"/p2pvpn/default/node/{base58.b58encode(bytes.fromhex('002508021221') + bytes(33)).decode()}",  # secp256k1
        f"/p2pvpn/{'n' * 64}/node/{PEER1_TEXT}",  # too long
    ],
)
def test_parse_record_key_rejects_what_is_not_ours(key: str) -> None:
    with pytest.raises(RecordError):
        parse_record_key(key)


def test_parse_record_key_rejects_non_strings() -> None:
    with pytest.raises(RecordError):
        parse_record_key(b"/p2pvpn/default/node/x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Provider keys.


def test_provider_key_is_a_hex_sha256_multihash() -> None:
    key = provider_key("default", "members")
    assert key == "1220" + hashlib.sha256(b"/p2pvpn/default/members").hexdigest()
    assert key == "1220669f68888882ec2f1aedd478a074af5346d81a977642f8489a7a0ccf59658d4f"
    assert provider_key("lab", "exit") == "1220" + hashlib.sha256(b"/p2pvpn/lab/exit").hexdigest()


def test_kad_dht_reads_the_provider_key_as_those_34_bytes() -> None:
    from libp2p.kad_dht.kad_dht import _encode_key

    for role in rec.ROLES:
        key = provider_key("default", role)
        assert _encode_key(key) == bytes.fromhex(key)


@pytest.mark.parametrize(("network", "role"), [("default", "member"), ("default", ""), ("a/b", "relay")])
def test_provider_key_refuses_unknown_roles_and_bad_networks(network: str, role: str) -> None:
    with pytest.raises(RecordError):
        provider_key(network, role)


# --------------------------------------------------------------------------- #
# Multiaddr grammar.

LISTEN_OK = [
    "/ip4/192.0.2.1/tcp/4001",
    "/ip4/127.0.0.1/tcp/1",
    "/ip6/2001:db8::1/tcp/65535",
    "/ip4/192.0.2.1/udp/4001/quic-v1",
    "/ip6/::1/udp/4001/quic-v1",
    "/dns/example.com/tcp/4001",
    "/dns4/a--b.example/udp/4001/quic-v1",
    "/dns6/xyz/tcp/4001",
    "/dns/EXAMPLE.com/tcp/4001",
    "/dns/1.2.3.4/tcp/4001",
]
LISTEN_BAD = [
    "/ip4/0.0.0.0/tcp/4001",  # unspecified
    "/ip6/::/tcp/4001",
    "/ip4/192.0.2.1/tcp/0",  # port 0
    "/ip4/192.0.2.1/udp/4001",  # UDP without QUIC
    "/ip4/192.0.2.1/udp/4001/quic",  # draft QUIC
    "/ip4/192.0.2.1/tcp/4001/ws",
    "/ip4/192.0.2.1",
    "/tcp/4001",
    "/ip4/192.0.2.1/tcp/4001/tcp/4002",
    f"/ip4/192.0.2.1/tcp/4001/p2p/{PEER1_TEXT}",  # listen addresses carry no /p2p
    f"/ip4/192.0.2.1/tcp/4001/p2p/{PEER2_TEXT}/p2p-circuit",
    "/dns/xn--bcher-kva.example/tcp/1",  # A-labels are outside the grammar
    "/dns/a-.example/tcp/1",
    "/unix/tmp/sock",
]
RELAY_OK = [
    f"/ip4/198.51.100.7/tcp/4001/p2p/{PEER2_TEXT}/p2p-circuit",
    f"/dns/relay.example/udp/443/quic-v1/p2p/{PEER2_TEXT}/p2p-circuit",
    f"/ip6/2001:db8::7/tcp/4001/p2p/{SHA256_PEER}/p2p-circuit",
]
RELAY_BAD = [
    "/ip4/198.51.100.7/tcp/4001",
    f"/ip4/198.51.100.7/tcp/4001/p2p/{PEER2_TEXT}",
    "/ip4/198.51.100.7/tcp/4001/p2p-circuit",
    f"/ip4/198.51.100.7/tcp/4001/p2p/{PEER2_TEXT}/p2p-circuit/p2p/{PEER1_TEXT}",
    f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER2_TEXT}/p2p-circuit",
]


@pytest.mark.parametrize("addr", LISTEN_OK)
def test_listen_addresses_accepted(addr: str) -> None:
    rec._check_addr(Multiaddr(addr).to_bytes(), relay=False)


@pytest.mark.parametrize("addr", LISTEN_BAD)
def test_listen_addresses_refused(addr: str) -> None:
    try:
        raw = Multiaddr(addr).to_bytes()
    except ValueError:  # the multiaddr library refuses it already
        return
    with pytest.raises(RecordError):
        rec._check_addr(raw, relay=False)


@pytest.mark.parametrize("addr", RELAY_OK)
def test_relay_addresses_accepted(addr: str) -> None:
    rec._check_addr(Multiaddr(addr).to_bytes(), relay=True)


@pytest.mark.parametrize("addr", RELAY_BAD + LISTEN_OK)
def test_relay_addresses_refused(addr: str) -> None:
    with pytest.raises(RecordError):
        rec._check_addr(Multiaddr(addr).to_bytes(), relay=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x04\x01",  # truncated ip4 (the multiaddr library reads this as /ip4/0.0.0.1!)
        b"\x04\x01\x02\x03\x04\x06\x0f",  # truncated port
        b"\x84\x00\x01\x02\x03\x04\x06\x0f\xa1",  # non-minimal varint for ip4
        b"\xff\xff\xff\x01",
        b"\x35\x80\x80\x01a",  # 3-byte length
        b"\x35\x00\x06\x0f\xa1",  # empty DNS name
        b"\x35\x03a\xffb\x06\x0f\xa1",  # non-ASCII DNS name
        b"\x35\x03a_b\x06\x0f\xa1",  # not a host name
    ],
)
def test_binary_garbage_is_refused(raw: bytes) -> None:
    with pytest.raises(RecordError):
        rec._check_addr(raw, relay=False)


def test_dns_name_length_limit() -> None:
    name = ".".join(["a" * 63] * 4)[:253]
    rec._check_addr(Multiaddr(f"/dns/{name}/tcp/1").to_bytes(), relay=False)
    raw = b"\x35" + rec._uvarint(254) + b"a" * 254 + b"\x06\x00\x01"
    with pytest.raises(RecordError, match="LDH"):
        rec._check_addr(raw, relay=False)


def test_usable_addrs_cleans_a_hosts_listen_addresses() -> None:
    addrs = [
        "/ip4/0.0.0.0/tcp/4001",
        f"/ip4/192.0.2.1/tcp/4001/p2p/{PEER1_TEXT}",
        "/ip4/192.0.2.1/tcp/4001",
        Multiaddr("/ip4/192.0.2.1/udp/4001/quic-v1"),
        "/ip4/192.0.2.1/tcp/4002/ws",
        "nonsense",
    ]
    assert usable_addrs(addrs) == (
        Multiaddr("/ip4/192.0.2.1/tcp/4001"),
        Multiaddr("/ip4/192.0.2.1/udp/4001/quic-v1"),
    )
    many = [f"/ip4/192.0.2.1/tcp/{port}" for port in range(1, 100)]
    assert len(usable_addrs(many)) == MAX_ADDRS


# --------------------------------------------------------------------------- #
# Exit policy entries.

V4_ALL = ipaddress.IPv4Network("0.0.0.0/0")


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("0.0.0.0/0", PolicyEntry(V4_ALL)),
        ("0.0.0.0/0:*", PolicyEntry(V4_ALL)),
        ("10.0.0.0/8:*", PolicyEntry(ipaddress.IPv4Network("10.0.0.0/8"))),
        ("192.0.2.1/32:22", PolicyEntry(ipaddress.IPv4Network("192.0.2.1/32"), ((22, 22),))),
        ("0.0.0.0/0:1-1023,8080", PolicyEntry(V4_ALL, ((1, 1023), (8080, 8080)))),
        ("[::/0]", PolicyEntry(ipaddress.IPv6Network("::/0"))),
        ("[2000::/3]:80,443", PolicyEntry(ipaddress.IPv6Network("2000::/3"), ((80, 80), (443, 443)))),
        ("[::ffff:0.0.0.0/96]:*", PolicyEntry(ipaddress.IPv6Network("::ffff:0:0/96"))),
    ],
)
def test_policy_entries_parse(entry: str, parsed: PolicyEntry) -> None:
    assert parse_policy_entry(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "0.0.0.0",  # prefix length is required
        "10.0.0.1/8",  # host bits
        "10.0.0.0/33",
        "10.0.0.0/08",
        "010.0.0.0/8",
        "256.0.0.0/8",
        "::/0",  # IPv6 needs brackets
        "[::/0",
        "[10.0.0.0/8]",  # IPv4 in brackets
        "[fe80::%eth0/64]",
        "[::/129]",
        "0.0.0.0/0:",
        "0.0.0.0/0:0",
        "0.0.0.0/0:080",
        "0.0.0.0/0:65536",
        "0.0.0.0/0:443-80",
        "0.0.0.0/0:80,",
        "0.0.0.0/0:**",
        "0.0.0.0/0:80 ",
        " 0.0.0.0/0",
        "0.0.0.0/0:" + "1," * 30 + "1",  # over 64 bytes
    ],
)
def test_bad_policy_entries(entry: str) -> None:
    with pytest.raises(RecordError):
        parse_policy_entry(entry)


def test_exit_permits_deny_wins() -> None:
    role = ExitRole(allow=("0.0.0.0/0", "[2000::/3]:443"), deny=("10.0.0.0/8", "0.0.0.0/0:25"))
    assert role.permits(ipaddress.IPv4Address("192.0.2.1"), 80)
    assert not role.permits(ipaddress.IPv4Address("10.1.2.3"), 80)
    assert not role.permits(ipaddress.IPv4Address("192.0.2.1"), 25)
    assert role.permits(ipaddress.IPv6Address("2001:db8::1"), 443)
    assert not role.permits(ipaddress.IPv6Address("2001:db8::1"), 80)
    assert not role.permits(ipaddress.IPv6Address("fc00::1"), 443)
    assert not ExitRole(allow=()).permits(ipaddress.IPv4Address("192.0.2.1"), 80)
