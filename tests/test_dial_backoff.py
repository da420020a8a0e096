"""p2pvpn.dial_backoff: addresses that cannot work are skipped, ones that failed so wait, with counts."""

from __future__ import annotations

import errno

from libp2p.network.exceptions import SwarmException
from libp2p.transport.exceptions import OpenConnectionError

from p2pvpn.dial_backoff import BASE, CAP, DialBackoff, address_host, unreachable

LAN = "/ip4/198.19.52.2/tcp/4242"


def wrapped(code: int) -> SwarmException:
    """An OSError as py-libp2p hands it up: OSError -> OpenConnectionError -> SwarmException."""
    try:
        try:
            try:
                raise OSError(code, "boom")
            except OSError as os_err:
                raise OpenConnectionError(f"Failed to connect 198.19.52.2:4242 from 198.19.51.2:4242: {os_err}") from os_err
        except OpenConnectionError as oce:
            raise SwarmException("fail to open connection to peer X") from oce
    except SwarmException as exc:
        return exc


def test_unreachable_errors_are_found_through_py_libp2p_wrapping() -> None:
    assert unreachable(wrapped(errno.EADDRNOTAVAIL))
    assert unreachable(wrapped(errno.ENETUNREACH))
    assert unreachable(wrapped(errno.EHOSTUNREACH))
    assert not unreachable(wrapped(errno.ECONNREFUSED))  # a peer restarting: redial soon
    assert not unreachable(TimeoutError())
    assert unreachable(SwarmException("Failed to connect 198.19.52.2:4242: [Errno 99] Cannot assign"))  # text only
    assert unreachable(ExceptionGroup("dials", [ValueError("x"), wrapped(errno.EADDRNOTAVAIL)]))


def test_address_host() -> None:
    assert address_host("/ip4/198.18.0.1/tcp/1") == "198.18.0.1"
    assert address_host("/ip6/fd00::1/udp/1/quic-v1") == "fd00::1"
    assert address_host("/dns4/example.org/tcp/1") is None
    assert address_host("/p2p/QmX/p2p-circuit") is None


def test_scope_skips_what_never_reaches_another_host() -> None:
    dials = DialBackoff()
    assert dials.verdict("/ip4/0.0.0.0/tcp/4242") == "scope"
    assert dials.verdict("/ip6/::/tcp/4242") == "scope"
    assert dials.verdict("/ip6/fe80::1/tcp/4242") == "scope"
    assert dials.verdict("/ip4/224.0.0.1/tcp/4242") == "scope"
    assert dials.verdict("/ip4/127.0.0.1/tcp/4242") == "scope"  # we do not listen on loopback
    assert DialBackoff(local_loopback=True).verdict("/ip4/127.0.0.1/tcp/4242") is None
    assert dials.verdict(LAN) is None
    assert dials.verdict("/dns4/relay.example/tcp/4242") is None
    assert dials.status() == {"skipped": {"scope": 5}, "backing_off": 0}


def test_an_unreachable_address_backs_off_exponentially_up_to_the_cap() -> None:
    now = [0.0]
    dials = DialBackoff(clock=lambda: now[0])
    waits = []
    for _ in range(10):
        dials.record(LAN, wrapped(errno.EADDRNOTAVAIL))
        start = now[0]
        while dials.verdict(LAN) == "backoff":
            now[0] += 1.0
        waits.append(now[0] - start)
    assert waits[:3] == [BASE, 2 * BASE, 4 * BASE]
    assert max(waits) == CAP
    assert dials.skipped["backoff"] == sum(waits)


def test_success_forgets_and_other_failures_do_not_count() -> None:
    now = [0.0]
    dials = DialBackoff(clock=lambda: now[0])
    dials.record(LAN, wrapped(errno.EADDRNOTAVAIL))
    assert dials.verdict(LAN) == "backoff"
    assert dials.status()["backing_off"] == 1
    other = "/ip4/198.19.52.3/tcp/4242"
    assert dials.verdict(other) is None  # per address
    now[0] = BASE
    assert dials.verdict(LAN) is None
    dials.record(LAN, None)
    dials.record(LAN, wrapped(errno.EADDRNOTAVAIL))
    now[0] += BASE - 0.5
    assert dials.verdict(LAN) == "backoff"  # back to the first step after the success
    dials.record(other, wrapped(errno.ECONNREFUSED))
    assert dials.verdict(other) is None


def test_memory_is_bounded() -> None:
    from p2pvpn import dial_backoff

    dials = DialBackoff(clock=lambda: 0.0)
    for i in range(dial_backoff.MAX_ADDRS + 50):
        dials.record(f"/ip4/198.19.{i // 250}.{i % 250 + 1}/tcp/1", wrapped(errno.ENETUNREACH))
    assert len(dials._waits) == dial_backoff.MAX_ADDRS
    assert dials.verdict("/ip4/198.19.0.1/tcp/1") is None  # the oldest went first
