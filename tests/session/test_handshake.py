import ipaddress
from dataclasses import replace

import pytest

from p2pvpn import addressing
from p2pvpn.session.handshake import HandshakeError, check_hello, make_hello
from p2pvpn.session.manager import backoff_delays
from p2pvpn.wire.codec import CloseCode, Keepalive

PID = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))


def hello(**changes: object):
    return replace(make_hello("lab", addressing.derive(PID, "lab"), 1400), **changes)


def test_valid_hello_accepted() -> None:
    params = check_hello(hello(), PID, "lab")
    assert params.ipv4 == addressing.derive(PID, "lab").ipv4 and params.mtu == 1400


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"version": 2}, CloseCode.VERSION_MISMATCH),
        ({"network": "other"}, CloseCode.WRONG_NETWORK),
        ({"ipv4": ipaddress.IPv4Address("100.64.0.9")}, CloseCode.ADDRESS_MISMATCH),
        ({"ipv6": ipaddress.IPv6Address("fd00::9")}, CloseCode.ADDRESS_MISMATCH),
        ({"address_index": 5}, CloseCode.ADDRESS_MISMATCH),
        ({"address_index": 10**6}, CloseCode.ADDRESS_MISMATCH),
        ({"mtu": 576}, CloseCode.PROTOCOL_ERROR),
    ],
)
def test_bad_hello_refused_with_code(changes: dict, code: CloseCode) -> None:
    with pytest.raises(HandshakeError) as info:
        check_hello(hello(**changes), PID, "lab")
    assert info.value.code == code


def test_hello_from_other_peer_id_refused() -> None:
    with pytest.raises(HandshakeError) as info:
        check_hello(hello(), PID[:-1] + b"\x00", "lab")
    assert info.value.code == CloseCode.ADDRESS_MISMATCH


def test_first_frame_must_be_hello() -> None:
    with pytest.raises(HandshakeError) as info:
        check_hello(Keepalive(seq=1), PID, "lab")
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_backoff_doubles_to_cap_with_jitter() -> None:
    import itertools
    import random

    delays = list(itertools.islice(backoff_delays(random.Random(1)), 8))
    for got, nominal in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 4, 4]):
        assert 0.8 * nominal <= got <= 1.2 * nominal
