"""Datagram format (docs/protocol.md §16.5): a 13-byte header, then AES-256-GCM ciphertext and tag.

```
offset 0   1 byte   type: 1 data, 2 probe, 3 probe reply
offset 1   4 bytes  receiver_index (big-endian)
offset 5   8 bytes  counter (big-endian)
offset 13  ...      ciphertext || 16-byte tag      nonce = 0x00000000 || counter, AAD = the header
```

Pure functions: bytes in, bytes (or a named reason for a drop) out.
``AESGCM`` objects are built once per key (the caller keeps them), since
building one costs more than sealing a packet.
"""

from __future__ import annotations

import enum
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HEADER = struct.Struct(">BIQ")
HEADER_LEN = HEADER.size  # 13
TAG_LEN = 16
MIN_DATAGRAM_LEN = HEADER_LEN + TAG_LEN  # 29
PROBE_ID_LEN = 8
MAX_COUNTER = 1 << 60
"""Counters are < 2^60; a receiver rejects larger ones, a sender rekeys before reaching it."""
_NONCE_PAD = bytes(4)


class Kind(enum.IntEnum):
    DATA = 1
    PROBE = 2
    PROBE_REPLY = 3


def seal(aead: AESGCM, kind: int, receiver_index: int, counter: int, plaintext: bytes) -> bytes:
    """One datagram: header || AES-256-GCM(plaintext) with the header as associated data."""
    header = HEADER.pack(kind, receiver_index, counter)
    return header + aead.encrypt(_NONCE_PAD + header[5:], plaintext, header)


def seal_many(aead: AESGCM, kind: int, receiver_index: int, first_counter: int, plaintexts: list[bytes]) -> list[bytes]:
    """``seal`` for consecutive counters from ``first_counter``: the same bytes, less Python per datagram.

    The sender's per-datagram step: the header is the fixed 5-byte prefix and
    the counter, and the nonce pad and the counter make the nonce, so no
    struct packing or call per datagram.
    """
    prefix = HEADER.pack(kind, receiver_index, 0)[:5]
    encrypt = aead.encrypt
    out = []
    for counter, plaintext in enumerate(plaintexts, first_counter):
        tail = counter.to_bytes(8, "big")
        header = prefix + tail
        out.append(header + encrypt(_NONCE_PAD + tail, plaintext, header))
    return out


def parse_header(datagram: bytes | memoryview) -> tuple[int, int, int] | None:
    """(type, receiver_index, counter), or None if too short or of an unknown type (``udp_short``)."""
    if len(datagram) < MIN_DATAGRAM_LEN:
        return None
    kind, index, counter = HEADER.unpack_from(datagram)
    if not 1 <= kind <= 3:
        return None
    return kind, index, counter


def open_(aead: AESGCM, datagram: bytes | memoryview) -> bytes | None:
    """The plaintext, or None if authentication fails (``udp_bad_auth``). The header is not re-checked."""
    header = bytes(datagram[:HEADER_LEN])
    try:
        return aead.decrypt(_NONCE_PAD + header[5:], bytes(datagram[HEADER_LEN:]), header)
    except InvalidTag:
        return None


def plaintext_ok(kind: int, plaintext: bytes) -> bool:
    """Data carries 1..65535 bytes (an IP packet), probes and replies exactly an 8-byte probe id."""
    if kind == Kind.DATA:
        return 0 < len(plaintext) <= 65535
    return len(plaintext) == PROBE_ID_LEN
