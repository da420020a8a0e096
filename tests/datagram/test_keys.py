"""Direction keys: both sides agree, directions differ, peer IDs and public keys are bound in."""

from __future__ import annotations

import pytest

from p2pvpn.datagram.errors import DatagramError
from p2pvpn.datagram.keys import Ephemeral, derive

A_ID, B_ID = b"\x00\x24peer-a" + bytes(30), b"\x00\x24peer-b" + bytes(30)


def test_both_sides_agree_and_directions_differ() -> None:
    a, b = Ephemeral.generate(), Ephemeral.generate()
    ka = derive(a, b.public, A_ID, B_ID)
    kb = derive(b, a.public, B_ID, A_ID)
    assert ka.send == kb.recv and ka.recv == kb.send
    assert ka.send != ka.recv and len(ka.send) == 32


def test_peer_ids_are_bound() -> None:
    a, b = Ephemeral.generate(), Ephemeral.generate()
    assert derive(a, b.public, A_ID, B_ID).send != derive(a, b.public, A_ID, b"x" + B_ID[1:]).send


@pytest.mark.parametrize("bad", [bytes(32), (1).to_bytes(32, "little"), bytes(31)])
def test_degenerate_peer_keys_are_protocol_errors(bad: bytes) -> None:
    with pytest.raises(DatagramError):
        derive(Ephemeral.generate(), bad, A_ID, B_ID)
