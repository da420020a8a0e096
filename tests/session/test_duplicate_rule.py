"""Which of two tunnels to one peer both ends keep (docs/protocol.md §7.5), rule 0 included."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pvpn.session.manager import preferred


def tunnel(initiator: ID, created: float, path: str = "direct") -> Any:
    return SimpleNamespace(initiator=initiator, created=created, path={"path": path})


def two_peers() -> tuple[ID, ID]:
    a, b = (ID.from_pubkey(create_new_key_pair().public_key) for _ in range(2))
    return (a, b) if a.to_bytes() < b.to_bytes() else (b, a)


def test_a_direct_tunnel_beats_a_relayed_one_whoever_opened_it() -> None:
    small, large = two_peers()
    relayed = tunnel(small, 1.0, "relayed")
    direct = tunnel(large, 2.0, "direct")  # opened by the larger ID: rules 1-2 alone would keep the relayed one
    assert preferred(relayed, direct) is direct
    assert preferred(direct, relayed) is direct


def test_without_a_relay_difference_the_older_rules_decide() -> None:
    small, large = two_peers()
    by_small, by_large = tunnel(small, 1.0), tunnel(large, 2.0)
    assert preferred(by_small, by_large) is by_small
    older, newer = tunnel(large, 1.0, "relayed"), tunnel(large, 2.0, "relayed")
    assert preferred(older, newer) is newer


def test_the_smaller_side_moving_off_a_relay_wins_under_the_older_rules_too() -> None:
    """Why the smaller peer ID opens the direct tunnel: peers without rule 0 agree with it."""
    small, large = two_peers()
    new_direct = tunnel(small, 3.0, "direct")
    for old in (tunnel(small, 1.0, "relayed"), tunnel(large, 1.0, "relayed")):
        # strip rule 0: compare as if both were direct
        as_old_rules = preferred(tunnel(old.initiator, old.created), tunnel(small, 3.0))
        assert as_old_rules.initiator == small and as_old_rules.created == 3.0
        assert preferred(old, new_direct) is new_direct
