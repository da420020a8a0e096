"""The node directory's copy of the network policy: ``<dir>/membership/policy`` (one line of text).

``p2pvpn policy set`` writes it; the running node re-reads it when it
changes and writes every better policy it receives into it, so ``policy
show`` always shows what the node enforces. Writes go to a temporary file
renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2pvpn.membership import canonical
from p2pvpn.policy.model import Policy, PolicyError, open_bytes

TEXT_PREFIX = "p2pvpn-policy1:"


def path_of(directory: Path) -> Path:
    return directory / "membership" / "policy"


def to_text(data: bytes) -> str:
    return TEXT_PREFIX + canonical.b64(data)


def from_text(text: str) -> bytes:
    text = text.strip()
    if not text.startswith(TEXT_PREFIX):
        raise PolicyError(f"a policy in text form starts with {TEXT_PREFIX}")
    return canonical.unb64(text[len(TEXT_PREFIX):], "policy")


def load(directory: Path, network: str) -> Policy | None:
    """The stored policy (checked: bytes, signer, signature), or None when there is none yet."""
    path = path_of(directory)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: unreadable: {exc}") from None
    try:
        return open_bytes(from_text(text), network)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def save(directory: Path, data: bytes) -> None:
    path = path_of(directory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(to_text(data) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
