"""recvmmsg through ctypes (p2pvpn.datagram.mmsg) against real loopback sockets: what recvmsg would have said."""

from __future__ import annotations

import socket
import struct
import sys
import time

import pytest
import trio
from test_udp_socket_dual import _has_ipv6_loopback

from p2pvpn.datagram import mmsg, udp_socket
from p2pvpn.datagram.mmsg import MmsgReceiver, decode_sockaddr
from p2pvpn.datagram.udp_socket import UDP_GRO, UDP_SEGMENT, DatagramSocket, _drain, _drain_mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="libc has no recvmmsg here")

SOL_UDP = 17
Got = list[tuple[bytes, int, tuple[str, int]]]


def _receiver_socket(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, 0))
    sock.setblocking(False)
    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    return sock


def _collect(receiver: MmsgReceiver, sock: socket.socket, expected: int, limit: int | None = None) -> Got:
    """Receive until ``expected`` entries came (bounded: 200 tries, 10 ms apart; loopback is near-synchronous)."""
    out: Got = []
    for _ in range(200):
        receiver.receive(sock.fileno(), out, limit)
        if len(out) >= expected:
            return out
        time.sleep(0.01)
    raise AssertionError(f"{len(out)} of {expected} datagrams arrived")


def test_single_datagrams_keep_order_data_and_source() -> None:
    receiver = MmsgReceiver(8)
    with _receiver_socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sent = [bytes([i]) * (10 + 97 * i) for i in range(12)]  # more than the 8 slots, sizes all different
        for payload in sent:
            sender.sendto(payload, ("127.0.0.1", port))
        got = _collect(receiver, sock, len(sent))
        assert [data for data, _, _ in got] == sent
        assert {source for _, _, source in got} == {sender.getsockname()}
        assert all(segment == 0 for _, segment, _ in got)
        assert receiver.receive(sock.fileno(), []) == 0  # drained: no datagram, no error
    receiver.close()


def test_a_gso_send_arrives_as_one_gro_run_with_its_segment_size() -> None:
    receiver = MmsgReceiver(4)
    with _receiver_socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        payload = bytes(range(256)) * 14  # 3584 bytes: 1000 + 1000 + 1000 + 584
        sender.sendmsg([payload], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1000))], 0,
                       ("127.0.0.1", sock.getsockname()[1]))  # fmt: skip
        [(data, segment, _)] = _collect(receiver, sock, 1)
        assert data == payload and segment == 1000
        assert udp_socket.split(data, segment)[-1] == payload[3000:]
    receiver.close()


def test_limit_takes_a_prefix_and_leaves_the_rest_queued() -> None:
    receiver = MmsgReceiver(16)
    with _receiver_socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(5):
            sender.sendto(b"d%d" % i, ("127.0.0.1", sock.getsockname()[1]))
        first = _collect(receiver, sock, 2, limit=2)
        assert [d for d, _, _ in first] == [b"d0", b"d1"]
        rest = _collect(receiver, sock, 3)
        assert [d for d, _, _ in rest] == [b"d2", b"d3", b"d4"]
    receiver.close()


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this kernel has no IPv6 loopback")
def test_dual_stack_sources_match_recvmsg_mapped_or_not() -> None:
    with _receiver_socket(socket.AF_INET6, "::") as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:  # fmt: skip
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        port = sock.getsockname()[1]
        for unmap, v4_host in ((True, "127.0.0.1"), (False, "::ffff:127.0.0.1")):
            receiver = MmsgReceiver(4, unmap=unmap)
            v4.sendto(b"four", ("127.0.0.1", port))
            v6.sendto(b"six", ("::1", port))
            got = _collect(receiver, sock, 2)
            assert got == [(b"four", 0, (v4_host, v4.getsockname()[1])), (b"six", 0, ("::1", v6.getsockname()[1]))]
            receiver.close()


def test_drain_mmsg_returns_what_drain_returns() -> None:
    """The same traffic through the recvmsg loop and the recvmmsg one: the same entries, in the same order."""
    results: list[Got] = []
    for use_mmsg in (False, True):
        with _receiver_socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            target = ("127.0.0.1", sock.getsockname()[1])
            for i in range(40):
                sender.sendto(b"x" * (100 + i), target)
            sender.sendmsg([b"g" * 2800], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1400))], 0, target)
            receiver = MmsgReceiver(8)
            got: Got = []
            for _ in range(200):  # bounded; each drain stops at RECV_BATCH or an empty socket
                batch, _more = _drain_mmsg(sock, receiver) if use_mmsg else _drain(sock)
                got.extend(batch)
                if len(got) >= 41:
                    break
                time.sleep(0.01)
            receiver.close()
            results.append([(data, segment, source[0]) for data, segment, source in got])  # type: ignore[misc]
    assert results[0] == results[1] and len(results[0]) == 41


def test_drain_mmsg_stops_near_the_batch_bound_and_says_more_waits() -> None:
    receiver = MmsgReceiver(32)
    with _receiver_socket() as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        target = ("127.0.0.1", sock.getsockname()[1])
        total = udp_socket.RECV_BATCH + 50
        for i in range(total):
            sender.sendto(i.to_bytes(4, "big"), target)
        first: Got = []
        for _ in range(200):  # until the first drain sees a full batch (loopback: at once)
            batch, more = _drain_mmsg(sock, receiver)
            first.extend(batch)
            if more or len(first) >= total:
                break
            time.sleep(0.01)
        assert more and udp_socket.RECV_BATCH <= len(first) < total
        rest, more = _drain_mmsg(sock, receiver)
        assert not more and [int.from_bytes(d, "big") for d, _, _ in first + rest] == list(range(total))
    receiver.close()


def test_decode_sockaddr_reads_both_families_and_refuses_the_rest() -> None:
    order = sys.byteorder
    v4 = socket.AF_INET.to_bytes(2, order) + (4001).to_bytes(2, "big") + bytes([198, 18, 0, 1]) + bytes(8)
    assert decode_sockaddr(v4) == ("198.18.0.1", 4001)
    v6 = (socket.AF_INET6.to_bytes(2, order) + (53).to_bytes(2, "big") + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "fd00::7") + (0).to_bytes(4, order))  # fmt: skip
    assert decode_sockaddr(v6) == ("fd00::7", 53)
    mapped = v6[:8] + socket.inet_pton(socket.AF_INET6, "::ffff:203.0.113.9") + bytes(4)
    assert decode_sockaddr(mapped, unmap=True) == ("203.0.113.9", 53)
    assert decode_sockaddr(mapped) == ("::ffff:203.0.113.9", 53)
    scoped = v6[:24] + socket.if_nametoindex("lo").to_bytes(4, order)
    assert decode_sockaddr(scoped) == ("fd00::7%lo", 53)
    with pytest.raises(ValueError):
        decode_sockaddr(socket.AF_UNIX.to_bytes(2, order) + bytes(14))
    with pytest.raises(ValueError):
        decode_sockaddr(b"\x02\x00")


async def test_the_node_socket_receives_with_recvmmsg_and_falls_back_without(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for enabled in (True, False):
        monkeypatch.setattr(udp_socket, "RECVMMSG", enabled)
        node = DatagramSocket("127.0.0.1", 0)
        await node.open()
        try:
            assert node.describe()["recvmmsg"] is enabled and (node.receiver is not None) is enabled
            # A datagram no tunnel registered: received by run() (either way) and counted, not delivered.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"\x01" + (7).to_bytes(4, "big") + bytes(40), ("127.0.0.1", node.port))
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                with trio.fail_after(5):
                    while node.drops["udp_unknown_index"] < 1:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            assert node.batches >= 1 and node.batched == 1
        finally:
            node.close()
        assert node.receiver is None


async def test_the_node_socket_takes_recvmsg_for_gro_runs_and_recvmmsg_for_single_datagrams(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(udp_socket, "RECVMMSG", True)
    node = DatagramSocket("127.0.0.1", 0)
    await node.open()
    try:
        receiver = node.receiver
        assert receiver is not None and receiver.per_slot == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                sender.sendmsg([b"\x01" + bytes(99)] * 1, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 50))], 0,
                               ("127.0.0.1", node.port))  # fmt: skip
                with trio.fail_after(5):
                    while node.batched < 2:
                        await trio.sleep(0.01)
                assert receiver.per_slot == 2  # a GRO run of two: the next receive is a recvmsg
                for _ in range(3):
                    sender.sendto(b"\x01" + bytes(49), ("127.0.0.1", node.port))
                with trio.fail_after(5):
                    while node.batched < 5:
                        await trio.sleep(0.01)
                assert receiver.per_slot == 1  # single datagrams again: back to recvmmsg
                nursery.cancel_scope.cancel()
        assert node.drops["udp_short"] + node.drops["udp_unknown_index"] == 5
    finally:
        node.close()
