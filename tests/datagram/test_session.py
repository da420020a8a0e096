"""Two datagram sessions exchanging datagrams by hand: the receive ladder and its drop reasons."""

from __future__ import annotations

import itertools

from p2pvpn.datagram.epochs import KeySchedule
from p2pvpn.datagram.packet import parse_header
from p2pvpn.datagram.path import PathState
from p2pvpn.datagram.session import DatagramSession, Drop, Received

A_EP, B_EP = ("198.18.0.1", 4000), ("198.18.0.2", 4001)


def pair() -> tuple[DatagramSession, DatagramSession]:
    indices = itertools.count(100)
    a = DatagramSession(KeySchedule(True, b"A" * 38, b"B" * 38, 4000, lambda: next(indices)))
    b = DatagramSession(KeySchedule(False, b"B" * 38, b"A" * 38, 4001, lambda: next(indices)))
    oa, ob = a.keys.start(), b.keys.start()
    a.keys.receive_offer(ob, 0.0)
    b.keys.receive_offer(oa, 0.0)
    a.path.set_candidates([B_EP], 0.0)
    b.path.set_candidates([A_EP], 0.0)
    return a, b


def deliver(to: DatagramSession, datagram: bytes, source: tuple[str, int], now: float) -> Received:
    header = parse_header(datagram)
    assert header is not None
    epoch = next(e for e in to.keys.epochs() if e.recv_index == header[1])
    return to.receive(epoch, datagram, source, now)


def test_probe_reply_brings_the_path_up_both_ways() -> None:
    a, b = pair()
    [(endpoint, probe)] = a.due_probes(0.0)
    assert endpoint == B_EP
    result = deliver(b, probe, A_EP, 0.01)
    assert result.reply is not None
    assert b.path.state is PathState.STREAM  # a probe alone proves nothing about b -> a
    deliver(a, result.reply, B_EP, 0.02)
    assert a.path.state is PathState.UDP and a.usable
    [datagram] = a.seal_packets([b"\x45" + bytes(27)], 0.03)
    got = deliver(b, datagram, A_EP, 0.04)
    assert got.packet == b"\x45" + bytes(27)
    assert b.path.state is PathState.UDP and b.path.endpoint == A_EP
    assert (a.tx_packets, b.rx_packets) == (1, 1)


def test_replayed_forged_and_malformed_are_dropped() -> None:
    a, b = pair()
    [datagram] = a.seal_packets([b"\x45abc"], 0.0)
    assert deliver(b, datagram, A_EP, 0.0).packet == b"\x45abc"
    assert deliver(b, datagram, A_EP, 0.0).drop == Drop.REPLAYED
    [fresh] = a.seal_packets([b"\x45abc"], 0.0)
    forged = fresh[:-1] + bytes([fresh[-1] ^ 1])
    assert deliver(b, forged, A_EP, 0.0).drop == Drop.BAD_AUTH
    assert deliver(b, fresh, A_EP, 0.0).packet is not None  # the forgery did not burn the counter
    probe = a.probe(2, bytes(8))
    assert probe is not None
    epoch = a.keys.current
    assert epoch is not None
    from p2pvpn.datagram.packet import seal
    bad = seal(epoch.send_aead, 2, epoch.send_index, epoch.next_counter() or 0, bytes(9))
    assert deliver(b, bad, A_EP, 0.0).drop == Drop.MALFORMED


def test_old_epoch_still_received_during_grace() -> None:
    a, b = pair()
    [late] = a.seal_packets([b"\x45late"], 0.0)
    offer = a.keys.rekey_due(500.0)
    assert offer is not None
    reply = b.keys.receive_offer(offer, 500.0).reply
    assert reply is not None
    a.keys.receive_offer(reply, 500.0)
    assert deliver(b, late, A_EP, 501.0).packet == b"\x45late"
    [new] = a.seal_packets([b"\x45new"], 501.0)
    assert parse_header(new)[1] == b.keys.current.recv_index  # type: ignore[index,union-attr]
    assert deliver(b, new, A_EP, 501.0).packet == b"\x45new"
