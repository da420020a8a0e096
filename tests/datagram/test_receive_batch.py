"""The socket's receive side without a socket: drained batches, any arrival order, the rekey hold."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pvpn.datagram.epochs import REKEY_AFTER_TIME, KeySchedule
from p2pvpn.datagram.session import HOLD_MAX, HOLD_TIME, DatagramSession, Drop
from p2pvpn.datagram.udp_socket import DatagramSocket, split

A_EP = ("198.18.0.1", 4000)


def pair() -> tuple[DatagramSession, DatagramSession, DatagramSocket]:
    """a and b (the tunnel's initiator: it starts rekeys) with epoch 1 installed; b's node socket
    (never opened: no I/O here)."""
    sock = DatagramSocket()
    indices = itertools.count(100)
    a = DatagramSession(KeySchedule(False, b"A" * 38, b"B" * 38, 4000, lambda: next(indices)))
    b = DatagramSession(KeySchedule(True, b"B" * 38, b"A" * 38, 4001, sock.allocate_index))
    oa, ob = a.keys.start(), b.keys.start()
    a.keys.receive_offer(ob, 0.0)
    b.keys.receive_offer(oa, 0.0)
    return a, b, sock


def packet(i: int) -> bytes:
    return b"\x45" + i.to_bytes(4, "big") + bytes(40)


def test_split_cuts_a_gro_run_and_leaves_a_single_datagram_whole() -> None:
    assert split(b"abcdefg", 3) == [b"abc", b"def", b"g"]
    assert split(b"abc", 0) == [b"abc"] and split(b"abc", 3) == [b"abc"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.randoms(use_true_random=False), st.floats(0, 0.5))
def test_any_arrival_order_with_duplicates_delivers_each_packet_once(
        count: int, rng: random.Random, duplicates: float) -> None:
    a, b, sock = pair()
    assert b.keys.current is not None
    got: list[bytes] = []
    sock.register(b, b.keys.current, got.extend)
    sent = [packet(i) for i in range(count)]
    datagrams = a.seal_packets(sent, 0.0)
    arriving = datagrams + [d for d in datagrams if rng.random() < duplicates]
    rng.shuffle(arriving)  # within 2048 counters: the replay window keeps every one
    # Whole GRO runs (same size here) and single datagrams, in batches of any size.
    received: list[tuple[bytes, int, tuple[str, int]]] = []
    i = 0
    while i < len(arriving):
        n = rng.randint(1, 8)
        run = arriving[i : i + n]
        received.append((b"".join(run), len(run[0]), A_EP) if n > 1 else (run[0], 0, A_EP))
        i += n
    i = 0
    while i < len(received):
        n = rng.randint(1, 40)
        sock._handle(received[i : i + n], 1.0)
        i += n
    assert sorted(got) == sorted(sent)
    assert sock.drops[Drop.REPLAYED] == len(arriving) - len(datagrams)
    assert b.rx_packets == count and b.path.endpoint == A_EP


def test_a_forged_datagram_in_a_batch_costs_only_itself() -> None:
    a, b, sock = pair()
    assert b.keys.current is not None
    got: list[bytes] = []
    sock.register(b, b.keys.current, got.extend)
    d = a.seal_packets([packet(i) for i in range(5)], 0.0)
    forged = d[2][:-1] + bytes([d[2][-1] ^ 1])
    sock._handle([(x, 0, A_EP) for x in (d[0], d[1], forged, d[3], d[4], b"short", d[2])], 1.0)
    assert got == [packet(i) for i in (0, 1, 3, 4, 2)]
    assert sock.drops[Drop.BAD_AUTH] == 1 and sock.drops[Drop.SHORT] == 1


def rekey_started(a: DatagramSession, b: DatagramSession, sock: DatagramSocket) -> tuple[object, list[bytes]]:
    """b offered epoch 2; a installed it at once and sealed data with it before b has a's answer."""
    offer = b.keys.rekey_due(REKEY_AFTER_TIME + 1)
    assert offer is not None
    sock.pending(offer.receiver_index, b)
    installed = a.keys.receive_offer(offer, REKEY_AFTER_TIME + 1)
    assert installed.reply is not None and installed.epoch is not None
    return installed.reply, a.seal_packets([packet(i) for i in range(3)], REKEY_AFTER_TIME + 1)


def test_datagrams_for_our_pending_epoch_are_held_then_opened_in_order() -> None:
    a, b, sock = pair()
    assert b.keys.current is not None
    got: list[bytes] = []
    sock.register(b, b.keys.current, got.extend)
    reply, early = rekey_started(a, b, sock)
    now = REKEY_AFTER_TIME + 1.01
    sock._handle([(d, 0, A_EP) for d in early], now)
    assert got == [] and sock.held == 3 and sock.drops[Drop.UNKNOWN_INDEX] == 0
    epoch2 = b.keys.receive_offer(reply, now + 0.05).epoch  # type: ignore[arg-type]
    assert epoch2 is not None
    sock.register(b, epoch2, got.extend, now + 0.05)
    assert got == [packet(i) for i in range(3)]
    late = a.seal_packets([packet(9)], now + 0.1)
    sock._handle([(late[0], 0, A_EP)], now + 0.1)
    assert got[-1] == packet(9)


def test_the_hold_is_bounded_in_time_and_count_and_only_for_the_pending_index() -> None:
    a, b, sock = pair()
    assert b.keys.current is not None
    sock.register(b, b.keys.current, lambda packets: None)
    reply, early = rekey_started(a, b, sock)
    now = REKEY_AFTER_TIME + 1
    assert not b.hold(12345, early[0], A_EP, now)  # not our pending index
    many = a.seal_packets([packet(i) for i in range(HOLD_MAX + 5)], now)
    sock._handle([(d, 0, A_EP) for d in early + many], now)
    assert sock.held == HOLD_MAX and sock.drops[Drop.UNKNOWN_INDEX] == len(early) + len(many) - HOLD_MAX
    got: list[bytes] = []
    epoch2 = b.keys.receive_offer(reply, now + HOLD_TIME + 0.5).epoch  # type: ignore[arg-type]
    assert epoch2 is not None
    sock.register(b, epoch2, got.extend, now + HOLD_TIME + 0.5)
    assert got == [] and sock.drops[Drop.UNKNOWN_INDEX] == len(early) + len(many)  # stale: counted, not opened
