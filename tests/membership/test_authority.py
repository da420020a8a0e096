"""What a signer decides: unique names and addresses, renewal, key rotation (§15.8)."""

from __future__ import annotations

import ipaddress

import pytest

from p2pvpn import addressing
from p2pvpn.membership import allocator, authority, cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import ROLE_ADMIN, ROLE_EXIT

from .conftest import DAY, T0, Net


def opened(net: Net, data: bytes) -> cert.Certificate:
    return cert.verify(data, net.nid, T0 + 1, {})


def test_new_member_gets_the_derived_proposal(net: Net) -> None:
    adm = authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0, name="bravo",
                          roles=ROLE_EXIT)
    c = opened(net, adm.certificate)
    expected = addressing.derive(net.pids[2], net.nid)
    assert (c.ipv4, c.ipv6, c.roles, c.name, adm.replaces) == (expected.ipv4, expected.ipv6, ROLE_EXIT, "bravo", None)
    assert c.not_after - c.not_before == cert.MEMBER_LIFETIME


def test_taken_addresses_move_to_the_next_candidate() -> None:
    pid = b"\x00\x24\x08\x01\x12\x20" + bytes(32)
    first = addressing.derive_ipv4(pid, "n", 0)[0]
    assert allocator.allocate_ipv4(pid, "n", {first}) == addressing.derive_ipv4(pid, "n", 1)[0]
    six = addressing.derive_ipv6(pid, "n")
    other = allocator.allocate_ipv6(pid, "n", {six})
    assert other != six and other in addressing.network_v6_prefix("n")


def test_allocation_is_unique_against_a_reference_model(net: Net) -> None:
    issued: list[cert.Certificate] = []
    for n in range(2, 6):
        c = opened(net, authority.admit(net.owner, net.nid, net.pids[n], issued=issued, revoked={}, now=T0,
                                        unique=True, name="same").certificate)
        issued.append(c)
    assert len({c.ipv4 for c in issued}) == len({c.ipv6 for c in issued}) == len({c.name for c in issued}) == 4
    assert sorted(c.name for c in issued) == ["same", "same-2", "same-3", "same-4"]


def test_name_taken_needs_replace_which_moves_name_and_addresses(net: Net) -> None:
    old = opened(net, authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0,
                                      name="db").certificate)
    with pytest.raises(MembershipError, match="--replace"):
        authority.admit(net.owner, net.nid, net.pids[3], issued=[old], revoked={}, now=T0, name="db")
    adm = authority.admit(net.owner, net.nid, net.pids[3], issued=[old], revoked={}, now=T0, name="db", replace=True)
    new = opened(net, adm.certificate)
    assert adm.replaces == net.pids[2]
    assert (new.name, new.ipv4, new.ipv6) == ("db", old.ipv4, old.ipv6)


def test_renewal_keeps_everything_but_the_dates(net: Net) -> None:
    first = opened(net, authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0, name="web",
                                        roles=ROLE_EXIT, groups=("dev",)).certificate)
    again = cert.verify(authority.admit(net.owner, net.nid, net.pids[2], issued=[first], revoked={},
                                        now=T0 + 5 * DAY).certificate, net.nid, T0 + 5 * DAY, {})
    assert (again.name, again.ipv4, again.ipv6, again.roles, again.groups) == \
        (first.name, first.ipv4, first.ipv6, first.roles, first.groups)
    assert again.not_before == T0 + 5 * DAY


def test_revoked_members_free_their_name_and_address(net: Net) -> None:
    old = opened(net, authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0,
                                      name="db").certificate)
    c = opened(net, authority.admit(net.owner, net.nid, net.pids[3], issued=[old], revoked={net.pids[2]: T0 + 1},
                                    now=T0, name="db").certificate)
    assert c.name == "db"


def test_admin_certificates_live_longer_but_an_admin_cannot_outlast_its_own(net: Net) -> None:
    a = opened(net, authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0,
                                    roles=ROLE_ADMIN).certificate)
    assert a.not_after - a.not_before == cert.ADMIN_LIFETIME
    b = opened(net, authority.admit(net.admin_signer(), net.nid, net.pids[3], issued=[], revoked={}, now=T0,
                                    roles=ROLE_ADMIN).certificate)
    assert b.not_after == T0 + 365 * DAY  # the admin's own certificate ends then


def test_bad_names_are_refused(net: Net) -> None:
    with pytest.raises(MembershipError, match="DNS label"):
        authority.admit(net.owner, net.nid, net.pids[2], issued=[], revoked={}, now=T0, name="No_Good")


def test_default_names_are_labels() -> None:
    assert allocator.default_name("12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5") == "peer-yksukph5"
    assert ipaddress.IPv4Address("100.64.0.1") in addressing.OVERLAY_V4_NET
