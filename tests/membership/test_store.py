"""The membership files: modes, round trips, locking (no network)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pvpn.membership import cert, revocation
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import Pending
from p2pvpn.membership.network import network_id, signer_from_key_pair
from p2pvpn.membership.store import Store

from .conftest import T0, Net


def test_owner_key_is_0600_and_yields_the_network_id(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.root.mkdir(mode=0o700)
    key = store.create_owner_key()
    path = store.root / "owner.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = store.owner_key()
    assert loaded is not None
    assert network_id(loaded.public_key.to_bytes()) == network_id(key.public_key.to_bytes())
    assert signer_from_key_pair(loaded).public_key == key.public_key.to_bytes()


def test_round_trips(tmp_path: Path, net: Net) -> None:
    store = Store(tmp_path)
    with pytest.raises(MembershipError, match="in no network"):
        store.network()
    store.create(net.nid, "lab")
    assert store.network() == (net.nid, "lab")
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    store.save_certificate(net.admin_cert)
    assert store.certificate().raw == net.admin_cert  # type: ignore[union-attr]
    member = net.issue(net.owner, 2)
    store.save_issued(member)
    store.save_issued(net.admin_cert)
    assert sorted(c.raw for c in store.issued()) == sorted([member, net.admin_cert])
    rset = store.revocations()
    rset.merge_bytes(revocation.sign_list(net.owner, net.nid, 5, {net.pids[3]: T0}), T0)
    store.save_revocations(rset)
    again = store.revocations()
    assert again.entries == {net.pids[3]: T0} and again.seq == 5
    pending = Pending(secret=bytes(16), expires=T0, uses=2, name="x", roles=1, groups=("g",))
    store.save_invite(b"\x01" * 16, pending)
    assert stat.S_IMODE((store.root / "invites" / ("01" * 16 + ".json")).stat().st_mode) == 0o600
    assert store.invite(b"\x01" * 16) == pending
    assert store.invite(b"\x02" * 16) is None
    store.drop_invite(b"\x01" * 16)
    assert store.invite(b"\x01" * 16) is None
    with store.lock():
        pass


def test_damaged_files_are_one_line_errors(tmp_path: Path, net: Net) -> None:
    store = Store(tmp_path)
    store.create(net.nid, "lab")
    (store.root / "revocations.json").write_text("{not json")
    with pytest.raises(MembershipError, match="damaged"):
        store.revocations()
    (store.root / "certificate").write_text("garbage")
    with pytest.raises(MembershipError, match="must start with"):
        store.certificate()
    assert cert.MEMBER_LIFETIME < cert.ADMIN_LIFETIME
