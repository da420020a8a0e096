"""Multi-hop without a network: the hidden node's settings, and where it dials each peer."""

from __future__ import annotations

from typing import Any

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

from p2pvpn import config
from p2pvpn.exit.multihop import HiddenPath, hidden_config


def pid() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


RELAY, OTHER_RELAY, BOOT, EXIT = pid(), pid(), pid(), pid()


class FakeManager:
    def __init__(self) -> None:
        self.peers: dict[ID, Any] = {}
        self.rewrite_dial_addrs = None


def build(exit_via: str) -> HiddenPath:
    cfg = config.build({}, {"use_exit": "auto", "exit_via": exit_via,
                            "bootstrap": [f"/ip4/198.18.1.20/tcp/4242/p2p/{BOOT}"]})
    return HiddenPath(cfg, host=None, manager=FakeManager(), discovery=lambda: None)  # type: ignore[arg-type]


def test_hidden_node_listens_on_loopback_serves_no_dht_and_never_punches() -> None:
    cfg = config.build({}, {"use_exit": "auto", "exit_via": "auto", "listen": ["/ip4/0.0.0.0/tcp/4242",
                                                                                "/ip6/::/udp/4243/quic-v1"],
                            "bootstrap": [f"/ip4/198.18.1.20/tcp/4242/p2p/{BOOT}"], "mdns": True})
    hidden = hidden_config(cfg)
    assert hidden.listen == ("/ip4/127.0.0.1/tcp/4242", "/ip6/::1/udp/4243/quic-v1")
    assert (hidden.dht, hidden.hole_punch, hidden.mdns, hidden.announce) == ("client", False, False, ())


def test_auto_dials_peers_only_at_their_relayed_addresses_and_bootstrap_peers_directly() -> None:
    path = build("auto")
    direct = multiaddr.Multiaddr("/ip4/198.18.1.1/tcp/4242")
    relayed = multiaddr.Multiaddr(f"/ip4/198.18.1.10/tcp/4242/p2p/{RELAY}/p2p-circuit")
    assert path.rewrite(EXIT, [direct, relayed]) == [relayed]
    assert path.relays == {RELAY}                  # the guard lets us connect to that relay directly
    assert path.rewrite(EXIT, [direct]) == []      # a peer without relay slots is not dialed at all
    boot = [multiaddr.Multiaddr("/ip4/198.18.1.20/tcp/4242")]
    assert path.rewrite(BOOT, boot) == boot


def test_a_named_relay_is_the_only_one_used() -> None:
    path = build(str(RELAY))
    mine = multiaddr.Multiaddr(f"/ip4/198.18.1.10/tcp/4242/p2p/{RELAY}/p2p-circuit")
    other = multiaddr.Multiaddr(f"/ip4/198.18.1.11/tcp/4242/p2p/{OTHER_RELAY}/p2p-circuit")
    assert path.rewrite(EXIT, [other, mine]) == [mine]
    assert path.rewrite(EXIT, [other]) == []       # until the relay's own address is known ...
    path.relay, path.relay_addr = RELAY, multiaddr.Multiaddr("/ip4/198.18.1.10/tcp/4242")
    assert path.rewrite(EXIT, [other]) == [mine]   # ... then we build the circuit address ourselves
    assert OTHER_RELAY not in path.relays


def test_guard_refuses_direct_dials_to_anyone_but_relays_and_bootstrap_peers() -> None:
    path = build("auto")
    path.relays.add(RELAY)
    addr = multiaddr.Multiaddr("/ip4/198.18.1.1/tcp/4242")
    path._check(RELAY, addr)
    path._check(BOOT, addr)
    with pytest.raises(SwarmException, match="only through the relay"):  # what py-libp2p's dialers expect
        path._check(EXIT, addr)
    assert path.refused_direct == 1
