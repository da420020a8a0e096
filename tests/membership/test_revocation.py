"""Revocation lists: signing, validation, selection and merging (§15.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership import revocation
from p2pvpn.membership.cert import CLOCK_SKEW, MAX_LIFETIME
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_EXIT, signer_from_seed
from p2pvpn.membership.revocation import RevocationSet

from .conftest import T0, Net


def test_owner_list_round_trip(net: Net) -> None:
    data = revocation.sign_list(net.owner, net.nid, 3, {net.pids[3]: T0, net.pids[2]: T0 + 1})
    lst = revocation.open_list(data, net.nid, T0, {})
    assert (lst.seq, lst.entries, lst.admin) == (3, {net.pids[2]: T0 + 1, net.pids[3]: T0}, None)
    body = pb.RevocationList.FromString(pb.SignedRevocationList.FromString(data).revocation_list)
    assert [r.peer_id for r in body.revocations] == sorted([net.pids[2], net.pids[3]])


def test_admin_may_sign_a_list_a_plain_member_may_not(net: Net) -> None:
    lst = revocation.open_list(revocation.sign_list(net.admin_signer(), net.nid, 1, {net.pids[3]: T0}), net.nid,
                               T0, {})
    assert lst.admin is not None
    member = net.issue(net.owner, 2, roles=ROLE_EXIT)
    with pytest.raises(MembershipError, match="not the admin"):
        revocation.sign_list(signer_from_seed(bytes([2]) * 32, member), net.nid, 1, {net.pids[3]: T0})
    with pytest.raises(MembershipError, match="neither the network owner"):
        revocation.sign_list(signer_from_seed(bytes([9]) * 32), net.nid, 1, {net.pids[3]: T0})


def test_list_from_a_revoked_admin_is_refused(net: Net) -> None:
    data = revocation.sign_list(net.admin_signer(), net.nid, 1, {net.pids[3]: T0})
    with pytest.raises(MembershipError, match="revoked"):
        revocation.open_list(data, net.nid, T0 + 10, {net.pids[1]: T0 + 1})


def test_unsorted_or_duplicate_entries_are_refused(net: Net) -> None:
    for peers in ([net.pids[3], net.pids[2]], [net.pids[2], net.pids[2]]):
        body = pb.RevocationList(network_id=net.nid, seq=1, issuer=net.owner.public_key,
                                 revocations=[pb.Revocation(peer_id=p, not_before=T0) for p in peers])
        raw = body.SerializeToString()
        data = pb.SignedRevocationList(revocation_list=raw,
                                       signature=net.owner.sign(revocation.REVOCATION_CONTEXT + raw))
        with pytest.raises(MembershipError, match="sorted"):
            revocation.open_list(data.SerializeToString(), net.nid, T0, {})


def test_merge_is_a_union_with_the_latest_time(net: Net) -> None:
    rset = RevocationSet(net.nid)
    a = revocation.open_list(revocation.sign_list(net.owner, net.nid, 1, {net.pids[2]: T0 + 5}), net.nid, T0, {})
    b = revocation.open_list(revocation.sign_list(net.admin_signer(), net.nid, 1,
                                                  {net.pids[2]: T0 + 1, net.pids[3]: T0}), net.nid, T0, {})
    assert rset.merge(a) == {net.pids[2]}
    assert rset.merge(b) == {net.pids[3]}
    assert rset.entries == {net.pids[2]: T0 + 5, net.pids[3]: T0}
    assert rset.merge(a) == set()  # idempotent
    assert rset.best is not None and rset.best.seq == 1 and rset.best.raw == max(a.raw, b.raw)


def test_publish_numbers_above_everything_seen_and_keeps_all_entries(net: Net) -> None:
    rset = RevocationSet(net.nid)
    rset.merge_bytes(revocation.sign_list(net.admin_signer(), net.nid, 41, {net.pids[3]: T0}), T0)
    data = rset.publish(net.owner, T0 + 10, {net.pids[2]: T0 + 10})
    lst = revocation.open_list(data, net.nid, T0 + 10, {})
    assert lst.seq == 42 and lst.entries == {net.pids[2]: T0 + 10, net.pids[3]: T0}
    assert rset.best == lst


def test_prune_forgets_entries_no_certificate_can_outlive(net: Net) -> None:
    rset = RevocationSet(net.nid, entries={net.pids[2]: T0, net.pids[3]: T0 + 100})
    rset.prune(T0 + MAX_LIFETIME + 2 * CLOCK_SKEW + 50)
    assert rset.entries == {net.pids[3]: T0 + 100}


def test_better_prefers_higher_seq(net: Net) -> None:
    lo = revocation.open_bytes(revocation.sign_list(net.owner, net.nid, 1, {net.pids[3]: T0}), net.nid)
    hi = revocation.open_bytes(revocation.sign_list(net.owner, net.nid, 2, {}), net.nid)
    assert revocation.better(hi, lo) and not revocation.better(lo, hi)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_refused(net: Net, data: st.DataObject) -> None:
    original = revocation.sign_list(net.admin_signer(), net.nid, 7, {net.pids[3]: T0, net.pids[4]: T0})
    pos = data.draw(st.integers(0, len(original) - 1))
    mutated = bytearray(original)
    mutated[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(MembershipError):
        revocation.open_list(bytes(mutated), net.nid, T0, {})


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=400))
def test_garbage_is_refused_with_one_error_type(net: Net, blob: bytes) -> None:
    with pytest.raises(MembershipError):
        revocation.open_list(blob, net.nid, T0, {})
