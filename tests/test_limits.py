"""The limiter (p2pvpn.limits) without I/O: gauges, tickets, hits, members apart from strangers."""

from __future__ import annotations

import dataclasses

import pytest

from p2pvpn import config
from p2pvpn.limits import KEYED, SHARES, Limits, ResourceManager


def test_a_ticket_takes_every_gauge_or_none_and_the_full_one_counts_the_hit() -> None:
    rm = ResourceManager(Limits(handshakes=3, handshakes_per_peer=2, handshakes_per_ip=10))
    a = [rm.acquire("handshakes", ("handshakes_per_peer", "A"), ("handshakes_per_ip", "ip1")) for _ in range(3)]
    assert a[0] is not None and a[1] is not None
    assert a[2] is None  # A's third: per peer is full
    assert rm.gauges["handshakes_per_peer"].hits == 1
    assert rm.gauges["handshakes"].hits == 0
    assert rm.gauges["handshakes"].in_use == 2  # nothing was taken for the refused one
    assert rm.acquire("handshakes", ("handshakes_per_peer", "B"), ("handshakes_per_ip", "ip1")) is not None
    assert rm.acquire("handshakes", ("handshakes_per_peer", "C"), ("handshakes_per_ip", "ip2")) is None
    assert rm.gauges["handshakes"].hits == 1


def test_release_gives_everything_back_once() -> None:
    rm = ResourceManager(Limits(lookups=1))
    ticket = rm.acquire("lookups")
    assert ticket is not None and rm.acquire("lookups") is None
    ticket.release()
    ticket.release()  # idempotent: finally blocks may release twice
    assert ticket.released
    assert rm.gauges["lookups"].in_use == 0
    again = rm.acquire("lookups")
    assert again is not None
    assert rm.gauges["lookups"].in_use == 1


def test_keys_are_counted_apart_and_emptied_keys_are_forgotten() -> None:
    rm = ResourceManager(Limits(conns=100, conns_per_peer=1, conns_per_ip=100))
    tickets = [rm.acquire("conns", ("conns_per_peer", f"p{i}"), ("conns_per_ip", "ip")) for i in range(50)]
    assert all(t is not None for t in tickets)
    gauge = rm.gauges["conns_per_peer"]
    assert gauge.in_use == 50 and gauge.describe()["busiest"] == 1
    for t in tickets:
        assert t is not None
        t.release()
    assert not gauge.held  # no per-key state left behind by a flood of identities


def test_members_gauge_is_apart_from_the_strangers_ones() -> None:
    rm = ResourceManager(Limits(handshakes=2, handshakes_known=2))
    assert rm.acquire("handshakes") and rm.acquire("handshakes")
    assert rm.acquire("handshakes") is None
    assert rm.acquire("handshakes_known") is not None  # strangers filled theirs; a member still gets in


def test_status_shows_limit_hits_and_in_use_for_every_gauge() -> None:
    rm = ResourceManager()
    rm.acquire("lookups")
    rm.hit("conns")
    rm.external["stop_unexpected_relay"] = lambda: {"limit": 0, "hits": 3, "in_use": 0}
    status = rm.status()
    names = {f.name for f in dataclasses.fields(Limits)} - SHARES
    assert names <= set(status)
    assert status["lookups"] == {"limit": Limits().lookups, "hits": 0, "in_use": 1}
    assert status["conns"]["hits"] == 1
    assert status["stop_unexpected_relay"]["hits"] == 3
    assert all("busiest" in status[n] for n in KEYED)


def test_every_limit_has_a_config_key_and_the_same_default() -> None:
    cfg = config.Config()
    for f in dataclasses.fields(Limits):
        key = f"limit_{f.name}"
        assert key in config.FIELDS, key
        assert getattr(cfg, key) == f.default
        assert config.field_doc(key), f"{key} has no docstring (it is the --help text)"
    assert Limits.from_config(cfg) == Limits()


@pytest.mark.parametrize("key", ["limit_conns", "limit_lookups", "limit_handshakes_per_ip"])
def test_a_zero_limit_is_refused_by_the_config(key: str) -> None:
    with pytest.raises(config.ConfigError, match=key):
        config.build({}, {key: 0})


def test_limits_documented_in_docs_limits_md() -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "limits.md").read_text()
    for f in dataclasses.fields(Limits):
        assert f"limit_{f.name}" in text, f"docs/limits.md does not document limit_{f.name}"


def test_a_keyed_want_without_a_key_is_not_counted() -> None:
    rm = ResourceManager(Limits(conns=10, conns_per_ip=1))
    for _ in range(5):  # loopback: source_key gives None, so only the total counts
        assert rm.acquire("conns", ("conns_per_ip", None)) is not None
    assert rm.gauges["conns_per_ip"].in_use == 0 and rm.gauges["conns"].in_use == 5
    assert rm.acquire("conns", ("conns_per_ip", "198.18.0.1")) is not None
    assert rm.acquire("conns", ("conns_per_ip", "198.18.0.1")) is None


class FakeConn:
    def __init__(self, ip: str, transport: list[object] | None = None) -> None:
        self.ip = ip
        self.transport = transport or []

    def get_transport_addresses(self) -> list[object]:
        return self.transport

    def get_remote_address(self) -> tuple[str, int]:
        return (self.ip, 4242)


def test_source_key_is_the_ip_the_relay_or_nothing_for_loopback() -> None:
    import multiaddr
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from p2pvpn.host import source_key

    assert source_key(FakeConn("198.18.0.5")) == "198.18.0.5"
    assert source_key(FakeConn("127.0.0.1")) is None and source_key(FakeConn("::1")) is None
    relay, peer = (ID.from_pubkey(create_new_key_pair().public_key) for _ in range(2))
    relayed = FakeConn("198.18.0.9", [multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer}")])
    assert source_key(relayed) == f"relay:{relay}"
