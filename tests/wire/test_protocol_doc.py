"""docs/protocol.md stays true: its schema and address test vectors are checked here.

(The hex frame vectors are checked in test_codec_messages.py.) Another
implementation will be written from that document alone, so a wrong number
in it is a compatibility bug.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import base58
from nacl.signing import SigningKey

from p2pvpn import addressing

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "protocol.md").read_text()
ED25519_PEER_ID_PREFIX = bytes.fromhex("002408011220")


def table_rows(pattern: str) -> list[tuple[str, ...]]:
    rows = re.findall(pattern, DOC, flags=re.MULTILINE)
    assert rows, f"no table rows match {pattern!r}"
    return rows


def peers() -> dict[str, bytes]:
    """Peer number -> peer_id_bytes, from the document's peer table."""
    out = {}
    for number, text, raw_hex in table_rows(r"^\| (\d) \| `(12D3KooW\w+)` \| `([0-9a-f]{76})` \|$"):
        raw = bytes.fromhex(raw_hex)
        assert base58.b58encode(raw).decode() == text
        # Documented as the peer whose Ed25519 seed is 32 bytes of its number.
        public_key = bytes(SigningKey(bytes([int(number)]) * 32).verify_key)
        assert raw == ED25519_PEER_ID_PREFIX + public_key
        out[number] = raw
    return out


def test_schema_in_the_document_is_the_proto_file() -> None:
    proto = (REPO / "proto" / "tunnel.proto").read_text()
    schema = proto[proto.index('syntax = "proto3";') :].strip()
    assert f"```proto\n{schema}\n```" in DOC


def test_peer_table_is_derived_from_the_documented_seeds() -> None:
    assert sorted(peers()) == ["1", "2", "3"]


def test_address_table_matches_the_derivation() -> None:
    raw = peers()
    rows = table_rows(r"^\| (\d) \| `(\w+)` \| `([\d.]+)` \| `([\d.]+)` \| `([0-9a-f:]+)` \|$")
    assert len(rows) == 6
    for number, network, ipv4_0, ipv4_1, ipv6 in rows:
        assert addressing.derive_ipv4(raw[number], network, 0) == (ipaddress.IPv4Address(ipv4_0), 0)
        assert addressing.derive_ipv4(raw[number], network, 1) == (ipaddress.IPv4Address(ipv4_1), 1)
        assert addressing.derive_ipv6(raw[number], network) == ipaddress.IPv6Address(ipv6)


def test_prefix_table_matches_the_derivation() -> None:
    rows = table_rows(r"^\| `(\w+)` \| `([0-9a-f:]+/64)` \|$")
    assert {network for network, _ in rows} == {"default", "lab"}
    for network, prefix in rows:
        assert addressing.network_v6_prefix(network) == ipaddress.IPv6Network(prefix)


def test_duplicate_rule_example_orders_the_test_peers() -> None:
    raw = peers()
    assert "peer 2 < peer 1 < peer 3" in DOC
    assert raw["2"] < raw["1"] < raw["3"]
