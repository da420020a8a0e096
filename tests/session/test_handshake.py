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


async def test_no_hello_in_time_is_close_hello_timeout_with_a_readable_reason(autojump_clock: object) -> None:
    """docs/protocol.md §7.1 rule 5: Close(HELLO_TIMEOUT), reason in words, not an exception name."""
    import trio
    from libp2p.peer.id import ID

    from p2pvpn import addressing
    from p2pvpn.session.handshake import make_hello
    from p2pvpn.session.tunnel import HANDSHAKE_TIMEOUT, Tunnel
    from p2pvpn.wire.codec import Close, CloseCode, FrameDecoder

    class SilentStream:
        muxed_conn = None
        written = b""

        async def write(self, data: bytes) -> None:
            self.written += data

        async def read(self, n: int) -> bytes:
            await trio.sleep_forever()
            return b""

        async def close(self) -> None:
            pass

    stream = SilentStream()
    me = ID(b"\x00\x24me")
    tunnel = Tunnel(stream, ID(b"\x00\x24silent"), me)  # type: ignore[arg-type]
    hello = make_hello("default", addressing.derive(me.to_bytes(), "default"), 1400)
    start = trio.current_time()
    with pytest.raises(HandshakeError) as info:
        await tunnel.handshake(hello, "default")
    assert trio.current_time() - start == pytest.approx(HANDSHAKE_TIMEOUT)
    assert info.value.code is CloseCode.HELLO_TIMEOUT and str(info.value) == "no Hello within 10 s"
    tunnel.close(info.value.code, str(info.value))
    await tunnel.shutdown()
    decoder = FrameDecoder()
    decoder.feed(stream.written)
    frames = list(decoder.frames())
    assert frames[0] == hello  # our Hello went first
    assert frames[1] == Close(CloseCode.HELLO_TIMEOUT, "no Hello within 10 s")
