"""Epoch exchange and rekey rules, two key schedules talking by hand (no I/O)."""

from __future__ import annotations

import itertools

import pytest

from p2pvpn.datagram.epochs import OLD_KEY_GRACE, REKEY_AFTER_TIME, KeySchedule
from p2pvpn.datagram.errors import DatagramError
from p2pvpn.datagram.packet import Kind, open_, seal
from p2pvpn.wire.codec import DatagramOffer

A_ID, B_ID = b"A" * 38, b"B" * 38


def pair() -> tuple[KeySchedule, KeySchedule]:
    indices = itertools.count(1)
    a = KeySchedule(True, A_ID, B_ID, 4000, lambda: next(indices))
    b = KeySchedule(False, B_ID, A_ID, 4001, lambda: next(indices))
    return a, b


def established() -> tuple[KeySchedule, KeySchedule]:
    a, b = pair()
    offer_a, offer_b = a.start(), b.start()
    assert a.receive_offer(offer_b, 0.0).reply is None
    assert b.receive_offer(offer_a, 0.0).reply is None
    return a, b


def assert_keys_match(a: KeySchedule, b: KeySchedule) -> None:
    ea, eb = a.current, b.current
    assert ea is not None and eb is not None and ea.number == eb.number
    assert ea.send_index == eb.recv_index and eb.send_index == ea.recv_index
    datagram = seal(ea.send_aead, Kind.DATA, ea.send_index, 0, b"x")
    assert open_(eb.recv_aead, datagram) == b"x"
    datagram = seal(eb.send_aead, Kind.DATA, eb.send_index, 0, b"y")
    assert open_(ea.recv_aead, datagram) == b"y"


def test_epoch_one_both_at_once() -> None:
    a, b = established()
    assert_keys_match(a, b)


def test_epoch_one_answered_when_received_first() -> None:
    a, b = pair()
    installed = b.receive_offer(a.start(), 0.0)
    assert installed.reply is not None and installed.reply.epoch == 1
    a.receive_offer(installed.reply, 0.0)
    assert_keys_match(a, b)


def test_rekey_by_the_initiator_with_grace_for_the_old_key() -> None:
    a, b = established()
    assert a.rekey_due(REKEY_AFTER_TIME - 1) is None
    assert b.rekey_due(REKEY_AFTER_TIME + 1) is None  # the responder never starts one
    offer = a.rekey_due(REKEY_AFTER_TIME)
    assert offer is not None and offer.epoch == 2
    assert a.rekey_due(REKEY_AFTER_TIME + 5) is None  # one at a time
    old_b = b.current
    installed = b.receive_offer(offer, 200.0)
    assert installed.reply is not None and installed.reply.epoch == 2
    a.receive_offer(installed.reply, 200.0)
    assert_keys_match(a, b)
    assert b.previous is old_b and b.expire(200.0 + OLD_KEY_GRACE - 0.1) is None
    assert b.expire(200.0 + OLD_KEY_GRACE) is old_b and b.previous is None


def test_rekey_after_packets() -> None:
    a, _ = established()
    assert a.current is not None
    a.current.send_counter = 2**32
    assert a.rekey_due(1.0) is not None


@pytest.mark.parametrize("epoch", [0, 2, 3])
def test_epochs_arrive_strictly_plus_one(epoch: int) -> None:
    a, b = pair()
    b.start()
    good = a.start()
    with pytest.raises(DatagramError):
        b.receive_offer(DatagramOffer(epoch, good.public_key, 9, 1), 0.0)


def test_repeated_offer_is_an_error() -> None:
    a, b = pair()
    offer = a.start()
    b.receive_offer(offer, 0.0)
    with pytest.raises(DatagramError):
        b.receive_offer(offer, 0.0)


def test_responder_may_not_start_a_rekey() -> None:
    a, b = established()
    # b (responder) sends an epoch-2 offer out of turn: a protocol error at the initiator.
    rogue = KeySchedule(True, B_ID, A_ID, 1, lambda: 77)
    offer = rogue.start()
    with pytest.raises(DatagramError, match="before we started it"):
        a.receive_offer(DatagramOffer(2, offer.public_key, 77, 1), 0.0)


def test_all_zero_public_key_is_an_error() -> None:
    a, b = pair()
    b.start()
    with pytest.raises(DatagramError):
        b.receive_offer(DatagramOffer(1, bytes(32), 5, 1), 0.0)
