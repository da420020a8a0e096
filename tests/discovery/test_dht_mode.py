"""Which nodes serve the DHT from the start (docs/protocol.md §13.1)."""

from __future__ import annotations

import dataclasses

import pytest

from p2pvpn.config import Config
from p2pvpn.node import serves_dht_at_start

BOOT = ("/ip4/198.18.0.1/tcp/4242/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",)


@pytest.mark.parametrize(
    ("dht", "reachability", "bootstrap", "serves"),
    [
        ("auto", "auto", (), True),  # the first node: the others bootstrap off it
        ("auto", "auto", BOOT, False),  # a member: a client until AutoNAT finds it reachable
        ("auto", "public", BOOT, True),
        ("auto", "private", (), False),  # behind a NAT it never serves, first node or not
        ("server", "private", BOOT, True),
        ("client", "auto", (), False),
    ],
)
def test_who_serves_the_dht_at_start(dht: str, reachability: str, bootstrap: tuple[str, ...], serves: bool) -> None:
    cfg = dataclasses.replace(Config(), dht=dht, reachability=reachability, bootstrap=bootstrap)
    assert serves_dht_at_start(cfg) is serves
