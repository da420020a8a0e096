"""Network identity: the owner's Ed25519 key and the network ID derived from it (§15.1).

The network ID is self-certifying: a certificate signed by the owner carries
the owner's public key, and anyone can check that it hashes to the network
ID, so members need no copy of the owner key and no server to ask.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

NETWORK_ID_CONTEXT = b"p2pvpn/membership/network-id/1\x00"
ED25519_PUBKEY_PROTO_PREFIX = bytes.fromhex("08011220")
ED25519_PEER_ID_PREFIX = bytes.fromhex("002408011220")
NETWORK_ID_LEN = 32
# Matched with fullmatch: "$" would also match before a final newline ("alpha\n" is no DNS label).
NETWORK_ID_RE = re.compile(r"[a-z2-7]{32}")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_GROUP_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")

SignFn = Callable[[bytes], bytes]

ROLE_RELAY = 1
ROLE_EXIT = 2
ROLE_ADMIN = 4
ROLE_NAMES: dict[str, int] = {"relay": ROLE_RELAY, "exit": ROLE_EXIT, "admin": ROLE_ADMIN}


def network_id(owner_public_key: bytes) -> str:
    """32 lowercase base32 characters: the first 20 bytes of SHA-256 over the protobuf-encoded key."""
    if len(owner_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(NETWORK_ID_CONTEXT + ED25519_PUBKEY_PROTO_PREFIX + owner_public_key).digest()
    return base64.b32encode(digest[:20]).decode().lower()


def is_network_id(text: str) -> bool:
    return bool(NETWORK_ID_RE.fullmatch(text))


def peer_id_bytes(public_key: bytes) -> bytes:
    """The 38-byte identity-multihash peer ID of an Ed25519 key (§2)."""
    return ED25519_PEER_ID_PREFIX + public_key


def public_key_of(peer_id: bytes) -> bytes | None:
    """The Ed25519 key inlined in a peer ID, or None if it is not the 38-byte Ed25519 form."""
    if len(peer_id) == 38 and peer_id.startswith(ED25519_PEER_ID_PREFIX):
        return peer_id[6:]
    return None


def is_dns_label(name: str) -> bool:
    """Lowercase RFC 1123 label: 1..63 of a-z 0-9 -, no hyphen at either end."""
    return bool(_LABEL_RE.fullmatch(name))


def is_group(name: str) -> bool:
    return bool(_GROUP_RE.fullmatch(name))


def roles_to_names(roles: int) -> list[str]:
    return [name for name, bit in ROLE_NAMES.items() if roles & bit]


def parse_roles(text: str) -> int:
    """``relay,exit,admin`` -> bitset; raises ValueError naming the unknown role."""
    roles = 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part not in ROLE_NAMES:
            raise ValueError(f"unknown role {part!r} (known: {', '.join(ROLE_NAMES)})")
        roles |= ROLE_NAMES[part]
    return roles


@dataclass(frozen=True, slots=True)
class Signer:
    """A key that signs certificates and revocation lists, and what proves its right to.

    The owner signs with the owner key and no ``issuer_certificate``; an admin
    signs with its node identity key and presents its own admin certificate.
    """

    public_key: bytes
    sign: SignFn
    issuer_certificate: bytes | None = None


def signer_from_seed(seed: bytes, issuer_certificate: bytes | None = None) -> Signer:
    """A Signer from a raw 32-byte Ed25519 seed (RFC 8032), e.g. for test vectors."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Signer(public, key.sign, issuer_certificate)


def signer_from_key_pair(key_pair: object, issuer_certificate: bytes | None = None) -> Signer:
    """A Signer from a libp2p Ed25519 KeyPair (an identity.key or owner.key file)."""
    public = key_pair.public_key.to_bytes()  # type: ignore[attr-defined]
    return Signer(public, key_pair.private_key.sign, issuer_certificate)  # type: ignore[attr-defined]
