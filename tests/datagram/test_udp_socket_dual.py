"""The node's UDP socket on an unspecified host: one dual-stack socket reaches IPv4 and IPv6 peers (loopback)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2pvpn.datagram.udp_socket import DatagramSocket, _drain


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def received(sock: DatagramSocket, timeout: float = 5.0) -> list[tuple[bytes, int, tuple[str, int]]]:
    assert sock._sock is not None
    with trio.fail_after(timeout):
        await trio.lowlevel.wait_readable(sock._sock)
    got, _more = _drain(sock._sock, sock.dual)
    return got


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this kernel has no IPv6 loopback")
async def test_unspecified_host_gives_one_socket_for_both_families() -> None:
    node = DatagramSocket("0.0.0.0", 0)
    await node.open()
    try:
        assert node.dual and node.accepts("198.18.0.2") and node.accepts("fd00::2")
        assert node.describe()["dual_stack"] is True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:  # fmt: skip
            v4.bind(("127.0.0.1", 0))
            v6.bind(("::1", 0))
            v4.sendto(b"from v4", ("127.0.0.1", node.port))
            [(data, _, source)] = await received(node)
            assert data == b"from v4" and source == ("127.0.0.1", v4.getsockname()[1])  # unmapped
            v6.sendto(b"from v6", ("::1", node.port))
            [(data, _, source)] = await received(node)
            assert data == b"from v6" and source == ("::1", v6.getsockname()[1])
            await node.send(("127.0.0.1", v4.getsockname()[1]), [b"to v4"])  # mapped on the way out
            await node.send(("::1", v6.getsockname()[1]), [b"to v6"])
            v4.settimeout(5)
            v6.settimeout(5)
            assert v4.recvfrom(100)[0] == b"to v4" and v6.recvfrom(100)[0] == b"to v6"
    finally:
        node.close()


async def test_a_specific_address_keeps_its_family_only() -> None:
    node = DatagramSocket("127.0.0.1", 0)
    await node.open()
    try:
        assert not node.dual and node.accepts("198.18.0.2") and not node.accepts("fd00::2")
    finally:
        node.close()
