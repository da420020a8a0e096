"""docs/protocol.md §16 stays true: its test vectors are recomputed here from the reference code.

The Go implementation is written from that section alone, so a wrong byte
in it is a compatibility bug. ``python tests/datagram/test_datagram_doc.py``
prints the vector block to paste into the document.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pvpn.datagram import keys
from p2pvpn.datagram.packet import Kind, open_, seal
from p2pvpn.wire.codec import DatagramOffer, encode

REPO = Path(__file__).resolve().parents[2]
PEER1 = bytes.fromhex("0024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c")
PEER2 = bytes.fromhex("0024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394")
PRIV1 = bytes([0x11]) * 32
PRIV2 = bytes([0x22]) * 32
INDEX1, INDEX2 = 0x01020304, 0x0A0B0C0D
# An ICMP echo request from peer 1 to peer 2 (network "default", §3.4), 28 bytes.
PACKET = bytes.fromhex("4500001c00004000400100006f6fbccd6441a7590800f7ff00000000")


def vectors() -> dict[str, str]:
    e1, e2 = keys.Ephemeral.from_private_bytes(PRIV1), keys.Ephemeral.from_private_bytes(PRIV2)
    k1 = keys.derive(e1, e2.public, PEER1, PEER2)
    k2 = keys.derive(e2, e1.public, PEER2, PEER1)
    assert k1.send == k2.recv and k1.recv == k2.send
    offer1 = DatagramOffer(1, e1.public, INDEX1, 4001, (bytes([198, 18, 0, 1]) + (4001).to_bytes(2, "big"),))
    offer2 = DatagramOffer(1, e2.public, INDEX2, 4002)
    data = seal(AESGCM(k1.send), Kind.DATA, INDEX2, 7, PACKET)
    probe = seal(AESGCM(k2.send), Kind.PROBE, INDEX1, 0, bytes(range(1, 9)))
    reply = seal(AESGCM(k1.send), Kind.PROBE_REPLY, INDEX2, 8, bytes(range(1, 9)))
    assert open_(AESGCM(k2.recv), data) == PACKET
    return {
        "public1": e1.public.hex(),
        "public2": e2.public.hex(),
        "shared": keys.shared_secret(e1, e2.public).hex(),
        "key12": k1.send.hex(),
        "key21": k1.recv.hex(),
        "offer1": encode(offer1).hex(),
        "offer2": encode(offer2).hex(),
        "data": data.hex(),
        "probe": probe.hex(),
        "reply": reply.hex(),
    }


def doc_value(doc: str, name: str) -> str:
    """The hex after ``name:`` in §16's vector block, line breaks and spaces removed."""
    section = doc[doc.index("## 16. Datagram path") :]
    match = re.search(rf"^{name}:\s*\n?((?:[0-9a-f ]+\n)+)", section, re.MULTILINE)
    assert match is not None, f"{name} is missing from docs/protocol.md §16"
    return re.sub(r"\s", "", match.group(1))


def test_vectors_in_the_document() -> None:
    doc = (REPO / "docs" / "protocol.md").read_text()
    for name, value in vectors().items():
        assert doc_value(doc, name) == value, name


def render() -> str:
    lines = []
    for name, value in vectors().items():
        lines.append(f"{name}:")
        lines += [value[i : i + 64] for i in range(0, len(value), 64)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
