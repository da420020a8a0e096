"""Membership state in the node directory, as small files (the only I/O in this package).

    <dir>/membership/network.json      {"network_id", "name"}
    <dir>/membership/owner.key         the owner key (libp2p private key bytes, 0600); only on the owner's host
    <dir>/membership/certificate       this node's certificate, as text (p2pvpn-cert1:...)
    <dir>/membership/revocations.json  every revocation known + the best signed list (base64url)
    <dir>/membership/issued/<peer-id>  certificates this node signed (owner or admin), as text
    <dir>/membership/invites/<id>.json pending invites with their secret (0600)

Every write goes to a temporary file first and is renamed into place, so the
running node and the CLI can share the directory; read-modify-write
sequences hold ``lock()``. The directory is 0700: it holds secrets.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn import identity
from p2pvpn.membership import canonical, cert
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import Pending
from p2pvpn.membership.network import ROLE_ADMIN, Signer, is_network_id, signer_from_key_pair
from p2pvpn.membership.revocation import RevocationSet, open_bytes

SUBDIR = "membership"
OWNER_KEY = "owner.key"


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    """One node directory's membership files."""

    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir
        self.root = node_dir / SUBDIR

    # -- network ----------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "network.json").exists()

    def create(self, network_id: str, name: str) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("issued", "invites"):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        _write(self.root / "network.json", json.dumps({"network_id": network_id, "name": name}).encode() + b"\n")

    def network(self) -> tuple[str, str]:
        """(network ID, label); a one-line error when this directory belongs to no network."""
        path = self.root / "network.json"
        try:
            data = json.loads(path.read_text())
            network_id, name = data["network_id"], data.get("name", "")
        except FileNotFoundError:
            raise MembershipError(f"{self.node_dir} is in no network; run 'p2pvpn network create' or "
                                  "'p2pvpn join'") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise MembershipError(f"{path} is unreadable or damaged") from None
        if not isinstance(network_id, str) or not is_network_id(network_id):
            raise MembershipError(f"{path}: network_id is not a network ID")
        return network_id, str(name)

    # -- keys ---------------------------------------------------------------------------------------------------
    def create_owner_key(self) -> KeyPair:
        return identity.create(self.root / OWNER_KEY)

    def owner_key(self) -> KeyPair | None:
        path = self.root / OWNER_KEY
        return identity.load(path) if path.exists() else None

    def signer_from_owner(self) -> Signer:
        owner = self.owner_key()
        if owner is None:
            raise MembershipError(f"no owner key in {self.root}")
        return signer_from_key_pair(owner)

    def signer(self, node_key: KeyPair, now: float) -> Signer:
        """The owner key if it is here, else this node's key with its admin certificate."""
        owner = self.owner_key()
        if owner is not None:
            return signer_from_key_pair(owner)
        network_id, _ = self.network()
        own = self.certificate()
        if own is None or not own.has_role(ROLE_ADMIN):
            raise MembershipError("this node is not an admin of the network (no owner key, no admin certificate)")
        cert.check(own, now, self.revocations().entries, identity.peer_id(node_key).to_bytes())
        return signer_from_key_pair(node_key, own.raw)

    # -- certificates -------------------------------------------------------------------------------------------
    def save_certificate(self, data: bytes) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.root / "certificate", cert.to_text(data).encode() + b"\n")

    def certificate(self) -> Certificate | None:
        path = self.root / "certificate"
        if not path.exists():
            return None
        network_id, _ = self.network()
        return cert.open_certificate(cert.from_text(path.read_text()), network_id)

    def save_issued(self, data: bytes) -> None:
        network_id, _ = self.network()
        c = cert.open_certificate(data, network_id)
        (self.root / "issued").mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.root / "issued" / ID(c.peer_id).to_base58(), cert.to_text(data).encode() + b"\n")

    def issued(self) -> list[Certificate]:
        network_id, _ = self.network()
        out = []
        directory = self.root / "issued"
        for path in sorted(directory.iterdir()) if directory.exists() else ():
            if path.name.startswith("."):
                continue
            out.append(cert.open_certificate(cert.from_text(path.read_text()), network_id))
        return out

    # -- revocations --------------------------------------------------------------------------------------------
    def revocations(self) -> RevocationSet:
        network_id, _ = self.network()
        rset = RevocationSet(network_id)
        path = self.root / "revocations.json"
        if not path.exists():
            return rset
        try:
            data = json.loads(path.read_text())
            rset.entries = {ID.from_base58(p).to_bytes(): int(t) for p, t in data["entries"].items()}
            best = data.get("best")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise MembershipError(f"{path} is unreadable or damaged") from None
        if best:  # verified without a clock: what was valid when stored stays the best list known
            rset.best = open_bytes(canonical.unb64(best, "revocation list"), network_id)
        return rset

    def save_revocations(self, rset: RevocationSet) -> None:
        data = {
            "entries": {ID(p).to_base58(): t for p, t in sorted(rset.entries.items())},
            "best": canonical.b64(rset.best.raw) if rset.best else "",
        }
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.root / "revocations.json", json.dumps(data, indent=1).encode() + b"\n")

    # -- invites ------------------------------------------------------------------------------------------------
    def save_invite(self, invite_id: bytes, pending: Pending) -> None:
        data = {
            "secret": pending.secret.hex(), "expires": pending.expires, "uses": pending.uses, "name": pending.name,
            "roles": pending.roles, "groups": list(pending.groups), "redeemed": pending.redeemed,
        }
        (self.root / "invites").mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.root / "invites" / f"{invite_id.hex()}.json", json.dumps(data).encode() + b"\n")

    def invite(self, invite_id: bytes) -> Pending | None:
        path = self.root / "invites" / f"{invite_id.hex()}.json"
        try:
            data = json.loads(path.read_text())
            return Pending(secret=bytes.fromhex(data["secret"]), expires=int(data["expires"]), uses=int(data["uses"]),
                           name=str(data["name"]), roles=int(data["roles"]), groups=tuple(data["groups"]),
                           redeemed=dict(data["redeemed"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise MembershipError(f"{path} is unreadable or damaged") from None

    def drop_invite(self, invite_id: bytes) -> None:
        (self.root / "invites" / f"{invite_id.hex()}.json").unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise read-modify-write between the node and CLI commands on this directory."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

