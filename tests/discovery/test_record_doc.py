"""docs/protocol.md §12 stays true: schema, keys, limits and the sealed test vectors.

Another implementation will be written from that document alone, so a wrong
byte in it is a compatibility bug. Ed25519 signatures are deterministic, so
the sealed vectors are reproduced exactly.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from p2pvpn.discovery import record as rec
from p2pvpn.discovery.record import ExitRole, RelayRole, make_record, open_sealed, record_key, seal

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "protocol.md").read_text()
SECTION = DOC[DOC.index("## 12. Node records and the DHT") :]
EXPIRES = 1767225600  # 2026-01-01T00:00:00Z

KEY1 = Ed25519PrivateKey.new(bytes([1]) * 32)
KEY2 = Ed25519PrivateKey.new(bytes([2]) * 32)
PEER1 = ID.from_pubkey(KEY1.get_public_key())
PEER2 = ID.from_pubkey(KEY2.get_public_key())

RECORD1 = make_record(
    PEER1,
    "default",
    seq=1,
    now=EXPIRES - rec.DEFAULT_TTL,
    addrs=("/ip4/192.0.2.1/tcp/4001", "/ip6/2001:db8::1/udp/4001/quic-v1"),
    relay_addrs=(f"/ip4/198.51.100.7/tcp/4001/p2p/{PEER2}/p2p-circuit",),
    relay=RelayRole(max_reservations=128, max_circuits=16),
    exit=ExitRole(allow=("0.0.0.0/0", "[::/0]:80,443"), deny=("10.0.0.0/8",), capacity_mbit=100, load_permille=250),
)
RECORD2 = make_record(PEER2, "lab", seq=7, now=EXPIRES - rec.DEFAULT_TTL, address_index=1)

SEALED1 = """
0a24080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf374
8801b40f6f5c12152f70327076706e2f6e6f64652d7265636f72642f311add01
0a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121b
f3748801b40f6f5c120764656661756c7418012080f2d6ca062a04646fbccd32
10fd1f6ae60c5b0000be309543b4d8919e420804c0000201060fa14217292001
0db800000000000000000000000191020fa1cd034a3304c6336407060fa1a503
260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25d
f60f5b8fc9b394a202520508800110105a2b0a09302e302e302e302f300a0d5b
3a3a2f305d3a38302c343433120a31302e302e302e302f38186420fa012a4057
ddde1111c43f2aac7ad9bf7345e17ce4f3609f51529638ddcab9eb15fb088736
7102a43c2cadc1bfc717dc52ec74401fc8b945c23b2182e447a57b8522bd0c
"""
SEALED2 = """
0a24080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df6
0f5b8fc9b39412152f70327076706e2f6e6f64652d7265636f72642f311a4f0a
260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25d
f60f5b8fc9b39412036c616218072080f2d6ca062a04646afbb93210fd9bf87d
26e80000996bc14783aa975038012a403a311b1b571fd66f16e501521b234f41
84c7b540a48ee7acce7b01a9c3fcd169a65f8888ef7b7ed68abf9e0f09c023d3
b658fb6991243ee9177cad1bbe5b9f06
"""
VECTORS = [(RECORD1, KEY1, SEALED1), (RECORD2, KEY2, SEALED2)]


@pytest.mark.parametrize(("record", "key", "sealed_hex"), VECTORS, ids=["record1", "record2"])
def test_sealed_vectors(record: rec.NodeRecord, key: Ed25519PrivateKey, sealed_hex: str) -> None:
    sealed = seal(record, key)
    assert sealed.hex() == "".join(sealed_hex.split())
    assert open_sealed(sealed) == record
    rec.check(record, network=record.network, now=EXPIRES - rec.MAX_TTL)  # the documented window
    rec.check(record, network=record.network, now=EXPIRES - 0.001)
    # The document prints the same bytes, 64 hex digits per line.
    assert "\n".join(textwrap.wrap(sealed.hex(), 64)) in SECTION
    assert f"`{record_key(record.network, record.peer_id)}`" in SECTION


def test_documented_sizes_of_record1() -> None:
    sealed = seal(RECORD1, KEY1)
    payload = rec._record_to_pb(RECORD1).SerializeToString()
    assert f"Payload ({len(payload)} bytes)" in SECTION
    assert f"Envelope ({len(sealed)} bytes)" in SECTION
    assert f"dd01 <payload>` ({len(rec._signing_bytes(payload))} bytes)" in SECTION
    assert f"no roles ({len(seal(RECORD2, KEY2))} bytes" in SECTION


def test_signing_prefix_in_the_document() -> None:
    prefix = rec._signing_bytes(b"")[:-1]  # without uvarint(len(payload)) = 00
    spaced = f"{prefix[:1].hex()} {prefix[1:19].hex()} {prefix[19:20].hex()} {prefix[20:].hex()}"
    assert spaced in SECTION


def test_schema_in_the_document_is_the_proto_file() -> None:
    proto = (REPO / "proto" / "records.proto").read_text()
    schema = proto[proto.index('syntax = "proto3";') :].strip()
    assert f"```proto\n{schema}\n```" in SECTION


def test_provider_key_example() -> None:
    assert f"`{rec.provider_key('default', 'members')}`" in SECTION


def test_limits_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d+) \|", SECTION, flags=re.MULTILINE)
    assert {name for name, _ in rows} == {
        "MAX_RECORD_SIZE",
        "MAX_KEY_LEN",
        "MAX_ADDRS",
        "MAX_ADDR_LEN",
        "MAX_POLICY_ENTRIES",
        "MAX_POLICY_ENTRY_LEN",
        "MAX_TTL",
        "DEFAULT_TTL",
    }
    for name, value in rows:
        assert getattr(rec, name) == int(value), name


def test_domain_and_payload_type_in_the_document() -> None:
    assert f"`{rec.DOMAIN}` ({len(rec.DOMAIN)} bytes)" in SECTION
    assert f"`{rec.PAYLOAD_TYPE.hex()}`" in SECTION
