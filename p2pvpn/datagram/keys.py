"""Datagram path keys (docs/protocol.md §16.3): X25519 ephemerals, HKDF direction keys.

Why this shape: the offers carrying the ephemeral public keys travel inside
the tunnel stream, which libp2p's secure channel already authenticates with
both peer IDs; so an unauthenticated Diffie-Hellman over it is enough, and
binding both peer IDs and both public keys into HKDF's ``info`` gives each
direction its own key. Ephemerals are thrown away once the keys exist
(forward secrecy); a new epoch brings new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2pvpn.datagram.errors import DatagramError

HKDF_SALT = b"p2pvpn udp/1"
KEY_LEN = 32
PUBLIC_KEY_LEN = 32


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """One side's X25519 key pair of one epoch."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> Ephemeral:
        return cls.from_private_bytes(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Ephemeral:
        """For test vectors: a fixed 32-byte private key."""
        private = X25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private, public)


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    send: bytes
    recv: bytes


def direction_key(shared: bytes, sender_id: bytes, receiver_id: bytes, sender_public: bytes,
                  receiver_public: bytes) -> bytes:
    """K(S->R) = HKDF-SHA256(shared, salt, info = id(S) || id(R) || pub(S) || pub(R), 32)."""
    info = sender_id + receiver_id + sender_public + receiver_public
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=HKDF_SALT, info=info).derive(shared)


def derive(own: Ephemeral, peer_public: bytes, own_id: bytes, peer_id: bytes) -> DirectionKeys:
    """Both direction keys of an epoch; raises DatagramError on a degenerate peer key (all-zero shared)."""
    if len(peer_public) != PUBLIC_KEY_LEN:
        raise DatagramError(f"peer's datagram public key is {len(peer_public)} bytes, expected 32")
    shared = shared_secret(own, peer_public)
    if shared == bytes(32):
        raise DatagramError("peer's datagram public key gives an all-zero shared secret")
    return DirectionKeys(
        send=direction_key(shared, own_id, peer_id, own.public, peer_public),
        recv=direction_key(shared, peer_id, own_id, peer_public, own.public),
    )


def _public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def shared_secret(own: Ephemeral, peer_public: bytes) -> bytes:
    """X25519(own, peer); all zeros for a low-order peer key (which cryptography refuses with ValueError)."""
    try:
        return own.private.exchange(_public(peer_public))
    except ValueError:
        return bytes(32)
