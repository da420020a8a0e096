"""The Hello check in an owned network and the re-checks after it, sans-IO (docs/protocol.md §15.9.1, §15.9.3)."""

from __future__ import annotations

import ipaddress

import pytest

from p2pvpn import addressing
from p2pvpn.membership import cert
from p2pvpn.membership.revocation import RevocationSet
from p2pvpn.membership.view import MembershipView, certificate_addresses
from p2pvpn.session.handshake import MEMBERSHIP_CAPABILITY, HandshakeError, check_hello, make_hello
from p2pvpn.wire.codec import CloseCode, FrameDecoder, Hello, encode

from .conftest import DAY, T0, Net


def view(net: Net, now: float) -> MembershipView:
    return MembershipView(net.nid, cert.open_certificate(net.admin_cert, net.nid), RevocationSet(net.nid),
                          clock=lambda: now)


def hello_of(net: Net, data: bytes) -> Hello:
    c = cert.open_certificate(data, net.nid)
    return make_hello(net.nid, addressing.OverlayAddresses(c.ipv4, c.ipv6, 0), 1400, certificate=data)


def test_hello_with_a_valid_certificate_is_judged_by_it(net: Net) -> None:
    data = net.issue(net.owner, 2)
    hello = hello_of(net, data)
    assert MEMBERSHIP_CAPABILITY in hello.capabilities
    v = view(net, T0 + 10)
    params = check_hello(hello, net.pids[2], net.nid, v)
    assert params.certificate is not None and params.certificate.raw == data
    assert v.presented[net.pids[2]].raw == data


def test_hello_survives_the_wire(net: Net) -> None:
    hello = hello_of(net, net.issue(net.owner, 2))
    decoder = FrameDecoder()
    decoder.feed(encode(hello))
    assert decoder.next_frame() == hello


@pytest.mark.parametrize("case", ["other peer", "expired", "revoked", "claims other addresses"])
def test_bad_certificates_are_refused(net: Net, case: str) -> None:
    data = net.issue(net.owner, 2)
    hello = hello_of(net, data)
    v = view(net, T0 + 10)
    peer, code = net.pids[2], CloseCode.NOT_AUTHORIZED
    if case == "other peer":
        peer = net.pids[3]
    elif case == "expired":
        v.clock = lambda: T0 + 8 * DAY
    elif case == "revoked":
        v.revocations.entries[net.pids[2]] = T0 + 5
    else:
        hello = Hello(**{**{f: getattr(hello, f) for f in hello.__slots__},  # type: ignore[attr-defined]
                         "ipv4": ipaddress.IPv4Address("100.64.0.9")})
        code = CloseCode.ADDRESS_MISMATCH
    with pytest.raises(HandshakeError) as err:
        check_hello(hello, peer, net.nid, v)
    assert err.value.code is code


def test_without_membership_the_certificate_is_ignored(net: Net) -> None:
    """A node of a plain network checks the derivation, as before: certificate addresses that differ fail."""
    data = net.issue(net.owner, 2)
    c = cert.open_certificate(data, net.nid)
    derived = addressing.derive(net.pids[2], net.nid)
    assert (c.ipv4, c.ipv6) == (derived.ipv4, derived.ipv6)
    assert check_hello(hello_of(net, data), net.pids[2], net.nid).certificate is None


def test_re_checks_find_revoked_and_expired_peers(net: Net) -> None:
    now = [T0 + 10.0]
    v = view(net, 0)
    v.clock = lambda: now[0]
    v.verify(net.issue(net.owner, 2), net.pids[2])
    v.verify(net.issue(net.owner, 3, lifetime=DAY), net.pids[3])
    assert v.invalid_peers([net.pids[2], net.pids[3], net.pids[4]]) == {}
    v.revocations.entries[net.pids[2]] = T0 + 5
    now[0] = T0 + DAY + cert.CLOCK_SKEW
    bad = v.invalid_peers([net.pids[2], net.pids[3]])
    assert set(bad) == {net.pids[2], net.pids[3]}
    assert "revoked" in bad[net.pids[2]] and "expired" in bad[net.pids[3]]


def test_certificate_addresses_find_the_derivation_index(net: Net) -> None:
    a1 = addressing.derive(net.pids[2], net.nid, 1)
    data = cert.issue(net.owner, network=net.nid, peer_id=net.pids[2], name="x", ipv4=a1.ipv4,
                      ipv6=addressing.derive_ipv6(net.pids[2], net.nid), roles=0, groups=(), not_before=T0,
                      not_after=T0 + DAY)
    assert certificate_addresses(cert.open_certificate(data, net.nid), net.nid).index == a1.index


def test_an_oversized_hello_certificate_is_a_protocol_error(net: Net) -> None:
    from p2pvpn.wire import tunnel_pb2
    from p2pvpn.wire.codec import MAX_CERTIFICATE_LEN, ProtocolError

    hello = hello_of(net, net.issue(net.owner, 2))
    frame = tunnel_pb2.Frame()
    frame.hello.ParseFromString(tunnel_pb2.Frame.FromString(encode(hello)[2:]).hello.SerializeToString())
    frame.hello.certificate = bytes(MAX_CERTIFICATE_LEN + 1)
    body = frame.SerializeToString()
    decoder = FrameDecoder()
    decoder.feed(bytes([0x80 | (len(body) & 0x7F), len(body) >> 7]) + body)
    with pytest.raises(ProtocolError, match="certificate"):
        decoder.next_frame()
    with pytest.raises(ProtocolError, match="certificate"):
        encode(Hello(**{**{f: getattr(hello, f) for f in hello.__slots__},  # type: ignore[attr-defined]
                        "certificate": bytes(MAX_CERTIFICATE_LEN + 1)}))


def test_roles_count_only_when_the_certificate_grants_them(net: Net) -> None:
    from p2pvpn.errors import ConfigError
    from p2pvpn.membership.network import ROLE_EXIT, ROLE_RELAY
    from p2pvpn.membership.view import check_roles

    plain = cert.open_certificate(net.issue(net.owner, 2), net.nid)
    exit_only = cert.open_certificate(net.issue(net.owner, 3, roles=ROLE_EXIT), net.nid)
    check_roles(plain, relay=False, exit=False)
    check_roles(exit_only, relay=False, exit=True)
    with pytest.raises(ConfigError, match="does not allow the relay role"):
        check_roles(exit_only, relay=True, exit=True)
    v = view(net, T0 + 10)
    v.verify(plain.raw, net.pids[2])
    v.verify(exit_only.raw, net.pids[3])
    assert v.allows(net.pids[3], ROLE_EXIT) and not v.allows(net.pids[2], ROLE_EXIT)
    assert not v.allows(net.pids[3], ROLE_RELAY) and not v.allows(net.pids[4], ROLE_EXIT)
    v.revocations.entries[net.pids[3]] = T0 + 5
    assert not v.allows(net.pids[3], ROLE_EXIT)


def test_a_pushed_renewal_must_keep_the_tunnels_addresses(net: Net) -> None:
    """§15.9.2: a certificate pushed on a tunnel is checked against that tunnel's addresses."""
    from p2pvpn.membership.errors import MembershipError

    data = net.issue(net.owner, 2)
    c = cert.open_certificate(data, net.nid)
    v = view(net, T0 + 10)
    assert v.verify(data, net.pids[2], (c.ipv4, c.ipv6)).raw == data
    v.presented.clear()
    with pytest.raises(MembershipError, match="addresses"):
        v.verify(data, net.pids[2], (ipaddress.IPv4Address("100.64.0.9"), c.ipv6))
    assert net.pids[2] not in v.presented  # refused, so not remembered
