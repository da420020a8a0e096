"""The exit policy as a plain object: parsing, verdicts, the published summary."""

from __future__ import annotations

import ipaddress

import pytest

from p2pvpn.addressing import network_v6_prefix
from p2pvpn.errors import ConfigError
from p2pvpn.exit.policy import DEFAULT_ALLOW, DEFAULT_DENY, TCP, UDP, ExitPolicy, Verdict

ICMP = 1


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.fixture
def default() -> ExitPolicy:
    return ExitPolicy.build(DEFAULT_ALLOW, DEFAULT_DENY, "default")


@pytest.mark.parametrize("destination", [
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1", "169.254.169.254",
    "224.0.0.251", "239.255.255.250", "255.255.255.255", "0.1.2.3", "240.0.0.1",
    "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.10",
    "2001::1", "2001:2::1", "2001:db8::1", "3fff::1",
])  # fmt: skip
def test_default_policy_denies_what_is_not_globally_reachable(default: ExitPolicy, destination: str) -> None:
    assert default.check(ip(destination), TCP, 443) == Verdict.DENY


@pytest.mark.parametrize("destination", [
    "::", "::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "64:ff9b:1::1", "100::1", "5f00::1",
    "fe80::1", "ff02::1", "fc00::1", "fd12:3456::1",
])  # fmt: skip
def test_default_policy_lets_out_no_ipv6_outside_global_unicast(default: ExitPolicy, destination: str) -> None:
    """NAT64 (64:ff9b::/96) included: through a translator it would reach IPv4 the IPv4 denies keep out."""
    assert default.check(ip(destination), TCP, 443) in (Verdict.NOT_ALLOWED, Verdict.OVERLAY)


@pytest.mark.parametrize("destination", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450::1"])
def test_default_policy_lets_public_destinations_out(default: ExitPolicy, destination: str) -> None:
    assert default.check(ip(destination), TCP, 443) == Verdict.ALLOW
    assert default.check(ip(destination), ICMP, None) == Verdict.ALLOW


def test_the_overlay_is_refused_whatever_the_configuration_says() -> None:
    open_policy = ExitPolicy.build(("0.0.0.0/0", "[::/0]"), (), "default")
    ula = network_v6_prefix("default")
    assert open_policy.check(ip("100.64.0.1"), TCP, 80) == Verdict.OVERLAY
    assert open_policy.check(ip("100.127.255.254"), UDP, 53) == Verdict.OVERLAY
    assert open_policy.check(ula.network_address + 5, TCP, 80) == Verdict.OVERLAY
    assert open_policy.check(ip("100.128.0.1"), TCP, 80) == Verdict.ALLOW  # just outside 100.64.0.0/10
    # Another network's ULA is not our overlay (only the default deny list refuses it).
    other = network_v6_prefix("other").network_address + 5
    assert open_policy.check(other, TCP, 80) == Verdict.ALLOW


def test_ports_match_tcp_and_udp_only_and_deny_wins() -> None:
    policy = ExitPolicy.build(("0.0.0.0/0:80,443,8000-8999",), ("203.0.113.0/24:8080", "203.0.113.99/32"), "n")
    dest = ip("198.51.100.7")
    assert policy.check(dest, TCP, 443) == Verdict.ALLOW
    assert policy.check(dest, UDP, 443) == Verdict.ALLOW  # QUIC
    assert policy.check(dest, TCP, 8999) == Verdict.ALLOW
    assert policy.check(dest, TCP, 22) == Verdict.NOT_ALLOWED
    assert policy.check(dest, ICMP, None) == Verdict.NOT_ALLOWED  # a ports entry never matches ICMP
    assert policy.check(ip("203.0.113.5"), TCP, 8080) == Verdict.DENY
    assert policy.check(ip("203.0.113.5"), TCP, 8081) == Verdict.ALLOW
    assert policy.check(ip("203.0.113.99"), ICMP, None) == Verdict.DENY
    assert policy.check(ip("2001:db8::1"), TCP, 443) == Verdict.NOT_ALLOWED  # no IPv6 allow entry


def test_empty_allow_permits_nothing() -> None:
    assert ExitPolicy.build((), (), "n").check(ip("8.8.8.8"), TCP, 443) == Verdict.NOT_ALLOWED


@pytest.mark.parametrize(("key", "entries", "fragment"), [
    ("allow", ("10.0.0.1/8",), "host bits"),
    ("allow", ("10.0.0.0/08",), "PREFIX[:PORTS]"),
    ("deny", ("2001:db8::/32",), "PREFIX[:PORTS]"),  # IPv6 needs brackets
    ("deny", ("0.0.0.0/0:0",), "port"),
    ("deny", ("0.0.0.0/0:90-80",), "reversed"),
    ("allow", tuple(f"10.{i}.0.0/16" for i in range(17)), "at most 16"),
])  # fmt: skip
def test_bad_entries_are_one_line_config_errors_naming_the_key(key: str, entries: tuple[str, ...], fragment: str) -> None:
    allow, deny = (entries, ()) if key == "allow" else (DEFAULT_ALLOW, entries)
    with pytest.raises(ConfigError) as info:
        ExitPolicy.build(allow, deny, "n")
    message = str(info.value)
    assert message.startswith(f"exit_{key}: ") and fragment in message and "\n" not in message


def test_summary_publishes_the_configuration_and_adds_the_overlay_when_deny_was_replaced(default: ExitPolicy) -> None:
    # 100.64.0.0/10 covers the IPv4 overlay; the list is full, and the IPv6 overlay is outside 2000::/3 anyway.
    assert default.summary() == (DEFAULT_ALLOW, DEFAULT_DENY)
    replaced = ExitPolicy.build(("0.0.0.0/0",), ("203.0.113.20/32",), "n")
    allow, deny = replaced.summary()
    assert allow == ("0.0.0.0/0",)
    assert deny == ("203.0.113.20/32", "100.64.0.0/10", f"[{network_v6_prefix('n')}]")
