"""Parse a protobuf message only in its canonical byte form (§15.3).

Signatures cover bytes, so a message must have exactly one byte form:
otherwise the same certificate could circulate under many encodings (the
malleability that let Nebula's fingerprint blocklists be bypassed). The
rule is checked by re-encoding: parse, drop unknown fields, serialize in
field order; anything that does not give the input back is refused.
"""

from __future__ import annotations

import base64
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from p2pvpn.membership.errors import MembershipError

M = TypeVar("M", bound=Message)


def parse(cls: type[M], data: bytes, what: str) -> M:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):  # upb reports some malformed input as RuntimeError
        raise MembershipError(f"{what} is not a valid protobuf message") from None
    msg.DiscardUnknownFields()
    if msg.SerializeToString(deterministic=True) != data:
        raise MembershipError(f"{what} is not canonically encoded")
    return msg


def encode(msg: Message) -> bytes:
    return msg.SerializeToString(deterministic=True)


def b64(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5): one word a shell passes untouched."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str, what: str) -> bytes:
    if not text or any(c not in _B64_ALPHABET for c in text) or len(text) % 4 == 1:
        raise MembershipError(f"{what} is not base64url text")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64(data) != text:  # non-zero padding bits: one text per byte string
        raise MembershipError(f"{what} is not canonical base64url")
    return data


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
