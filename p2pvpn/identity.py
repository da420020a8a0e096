"""The node's long-term Ed25519 libp2p identity, kept in one file with mode 0600.

The file holds the libp2p protobuf encoding of the private key (the same
bytes go-libp2p's ``crypto.MarshalPrivateKey`` writes), so a key can move
between implementations.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

from p2pvpn.errors import IdentityError

KEY_FILE = "identity.key"


def create(path: Path) -> KeyPair:
    """Write a new key with mode 0600; refuse to overwrite an existing one."""
    key_pair = create_new_key_pair()
    data = key_pair.private_key.serialize()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"{path} already exists; refusing to overwrite an identity key") from None
    except OSError as exc:
        raise IdentityError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return key_pair


def load(path: Path) -> KeyPair:
    """Load the key, refusing one that others can read (it is the node's only secret)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityError(f"no identity key at {path}; run 'p2pvpn init --dir {path.parent}' first") from None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run 'chmod 600 {path}'"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
    try:
        private_key = deserialize_private_key(data)
    except Exception as exc:  # the library raises assorted types for garbage input
        raise IdentityError(f"{path} is not a libp2p private key ({type(exc).__name__})") from None
    if private_key.get_type() != KeyType.Ed25519:
        raise IdentityError(f"{path} holds a {private_key.get_type().name} key; p2pvpn needs Ed25519")
    return KeyPair(private_key, private_key.get_public_key())


def peer_id(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
