import os
from pathlib import Path

import pytest

from p2pvpn import identity
from p2pvpn.errors import IdentityError


def test_create_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    kp = identity.create(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert identity.peer_id(identity.load(path)) == identity.peer_id(kp)
    assert str(identity.peer_id(kp)).startswith("12D3KooW")


def test_refuses_overwrite(tmp_path: Path) -> None:
    identity.create(tmp_path / "k")
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        identity.create(tmp_path / "k")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_refuses_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    identity.create(path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        identity.load(path)


def test_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="p2pvpn init"):
        identity.load(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    with pytest.raises(IdentityError, match="not a libp2p private key"):
        identity.load(bad)
