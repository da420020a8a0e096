"""Multi-hop without a network: the hidden node's settings, and where it dials each peer."""

from __future__ import annotations

from typing import Any

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

from p2pvpn import config
from p2pvpn.exit.multihop import HiddenPath, hidden_config, may_dial_direct, plan_route, relay_fits


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


# -- --exit-via auto never reveals our address to an exit (issue 12, point 3) --------------------------

class FakeRecord:
    def __init__(self, exit_role: bool) -> None:
        self.exit = object() if exit_role else None


class FakePeer:
    def __init__(self, peer_id: ID, exit_role: bool) -> None:
        self.peer_id = peer_id
        self.record = FakeRecord(exit_role)


def with_exits(path: HiddenPath, *exits: ID) -> HiddenPath:
    for peer_id in exits:
        path.manager.peers[peer_id] = FakePeer(peer_id, exit_role=True)
    return path


def circuit(relay: ID) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/ip4/198.18.1.10/tcp/4242/p2p/{relay}/p2p-circuit")


def test_auto_never_uses_the_exit_itself_as_its_relay() -> None:
    path = with_exits(build("auto"), EXIT)
    own = circuit(EXIT)  # the exit's record lists itself as a relay
    assert path.rewrite(EXIT, [own]) == []
    assert EXIT not in path.relays
    assert path.rewrite(EXIT, [own, circuit(RELAY)]) == [circuit(RELAY)]
    with pytest.raises(SwarmException):
        path._check(EXIT, multiaddr.Multiaddr("/ip4/198.18.1.1/tcp/4242"))


def test_auto_never_relays_through_any_exit_role_peer() -> None:
    other_exit = pid()
    path = with_exits(build("auto"), EXIT, other_exit)
    assert path.rewrite(EXIT, [circuit(other_exit)]) == []
    member = pid()
    assert path.rewrite(member, [circuit(other_exit), circuit(RELAY)]) == [circuit(RELAY)]
    assert path.relays == {RELAY}


def test_an_exit_is_never_dialed_directly_not_even_as_relay_or_bootstrap_peer() -> None:
    path = with_exits(build("auto"), BOOT)  # the bootstrap peer turns out to be an exit
    path.relays.add(BOOT)
    addr = multiaddr.Multiaddr("/ip4/198.18.1.20/tcp/4242")
    with pytest.raises(SwarmException):
        path._check(BOOT, addr)
    assert path.rewrite(BOOT, [addr]) == []  # and it is reached, if at all, only through another relay


def test_a_relay_learned_before_its_exit_role_loses_direct_dials_once_the_role_is_known() -> None:
    path = build("auto")
    assert path.rewrite(EXIT, [circuit(RELAY)]) == [circuit(RELAY)]
    path._check(RELAY, multiaddr.Multiaddr("/ip4/198.18.1.10/tcp/4242"))  # a relay: allowed
    with_exits(path, RELAY)  # its record now says it is an exit too
    with pytest.raises(SwarmException):
        path._check(RELAY, multiaddr.Multiaddr("/ip4/198.18.1.10/tcp/4242"))


def test_the_pinned_exit_counts_as_an_exit_before_its_record_arrives() -> None:
    cfg = config.build({}, {"use_exit": str(EXIT), "exit_via": "auto",
                            "bootstrap": [f"/ip4/198.18.1.20/tcp/4242/p2p/{BOOT}"]})
    path = HiddenPath(cfg, host=None, manager=FakeManager(), discovery=lambda: None)  # type: ignore[arg-type]
    assert path.rewrite(EXIT, [circuit(EXIT)]) == []
    assert path.rewrite(EXIT, [circuit(RELAY)]) == [circuit(RELAY)]


def test_a_named_relay_that_is_the_exit_is_refused_by_the_config() -> None:
    with pytest.raises(config.ConfigError, match="another peer than the exit"):
        config.build({}, {"use_exit": str(EXIT), "exit_via": str(EXIT),
                          "bootstrap": [f"/ip4/198.18.1.20/tcp/4242/p2p/{BOOT}"]})


def test_a_named_relay_with_the_exit_role_is_not_used() -> None:
    path = with_exits(build(str(RELAY)), RELAY)
    path.relay, path.relay_addr = RELAY, multiaddr.Multiaddr("/ip4/198.18.1.10/tcp/4242")
    assert path.rewrite(EXIT, [circuit(RELAY)]) == []


def test_plan_route_rules_sans_io() -> None:
    target, relay, exit_peer = pid(), pid(), pid()
    direct = multiaddr.Multiaddr("/ip4/198.18.1.1/tcp/4242")
    kwargs: dict[str, Any] = {"allowed": set(), "relays": set(), "exits": {exit_peer}, "wanted": None, "named": None}
    assert plan_route(target, [direct, circuit(relay)], **kwargs) == [circuit(relay)]
    assert plan_route(target, [circuit(target)], **kwargs) == []
    assert plan_route(target, [circuit(exit_peer)], **kwargs) == []
    assert plan_route(target, [direct], **{**kwargs, "allowed": {target}}) == [direct]
    assert plan_route(exit_peer, [direct], **{**kwargs, "allowed": {exit_peer}}) == []
    assert relay_fits(relay, target, set()) and not relay_fits(None, target, set())
    assert may_dial_direct(relay, set(), {relay}, set()) and not may_dial_direct(relay, set(), {relay}, {relay})
