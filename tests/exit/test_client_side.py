"""The client's pieces that need no network: default route in the route table, socket marks,
sysctl bookkeeping, config checks, and the exit role as it goes into a signed record."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pvpn import addressing, config
from p2pvpn.discovery import record as rec
from p2pvpn.errors import ConfigError
from p2pvpn.exit import marking, sysctl
from p2pvpn.exit.policy import DEFAULT_ALLOW, DEFAULT_DENY, ExitPolicy
from p2pvpn.routing import RouteTable

ULA = addressing.network_v6_prefix("default")
V6_PREFIX = ULA.network_address.packed[:8]
A_V4, B_V4 = bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])
A_V6 = (ULA.network_address + 1).packed
INTERNET_V4 = bytes([203, 0, 113, 10])
INTERNET_V6 = bytes.fromhex("20010db8000000000000000000000001")
UNKNOWN_OVERLAY_V4 = bytes([100, 100, 1, 1])
UNKNOWN_OVERLAY_V6 = (ULA.network_address + 99).packed
BOOTSTRAP = f"/ip4/198.18.1.10/tcp/4242/p2p/{ID.from_pubkey(create_new_key_pair().public_key)}"


def table_with_exit(exit_peer: str | None) -> RouteTable[str]:
    table: RouteTable[str] = RouteTable()
    table.set_peer("a", [A_V4, A_V6])
    table.set_peer("b", [B_V4])
    table.set_default(exit_peer, V6_PREFIX)
    return table


def test_without_an_exit_nothing_outside_the_overlay_routes_or_is_accepted() -> None:
    table = table_with_exit(None)
    assert table.lookup(INTERNET_V4) is None and table.lookup(INTERNET_V6) is None
    assert not table.source_allowed("a", INTERNET_V4)


def test_the_exit_gets_every_destination_outside_the_overlay_and_only_those() -> None:
    table = table_with_exit("b")
    assert table.lookup(INTERNET_V4) == "b" and table.lookup(INTERNET_V6) == "b"
    assert table.lookup(A_V4) == "a" and table.lookup(A_V6) == "a"  # peers keep their own routes
    assert table.lookup(UNKNOWN_OVERLAY_V4) is None  # a missing peer, not an internet host
    assert table.lookup(UNKNOWN_OVERLAY_V6) is None
    assert table.lookup(bytes([100, 128, 0, 1])) == "b"  # just outside 100.64.0.0/10


def test_only_the_current_exit_may_send_from_internet_sources() -> None:
    """WireGuard's AllowedIPs 0.0.0.0/0, ::/0 for the exit peer, and for no one else."""
    table = table_with_exit("b")
    assert table.source_allowed("b", INTERNET_V4) and table.source_allowed("b", INTERNET_V6)
    assert not table.source_allowed("a", INTERNET_V4)
    # Overlay sources stay bound to their owners, even for the exit.
    assert not table.source_allowed("b", A_V4) and not table.source_allowed("b", UNKNOWN_OVERLAY_V4)
    assert table.source_allowed("a", A_V4)
    table.set_default("a", V6_PREFIX)  # failover: the old exit loses the right at once
    assert not table.source_allowed("b", INTERNET_V4) and table.source_allowed("a", INTERNET_V4)


def test_default_needs_the_overlay_prefix() -> None:
    with pytest.raises(ValueError):
        RouteTable[str]().set_default("a", b"")


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")
async def test_marking_factory_marks_trio_sockets_and_tcp_streams() -> None:
    """py-libp2p's TCP transport dials with trio.open_tcp_stream / trio.socket.socket: both get the mark."""
    factory = marking.install(0x7032)
    try:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        assert listeners[0].socket.getsockopt(socket.SOL_SOCKET, marking.SO_MARK) == 0x7032
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert stream.socket.getsockopt(socket.SOL_SOCKET, marking.SO_MARK) == 0x7032
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        assert udp.getsockopt(socket.SOL_SOCKET, marking.SO_MARK) == 0x7032
        unix = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # not an IP socket: left alone
        assert factory.marked == 3
        for s in (stream, *listeners):
            await s.aclose()
        udp.close()
        unix.close()
    finally:
        trio.socket.set_custom_socket_factory(None)


def test_sysctl_changes_are_restored_and_a_crashed_runs_originals_win(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proc = tmp_path / "proc"
    (proc / "net/ipv4").mkdir(parents=True)
    knob = proc / "net/ipv4/ip_forward"
    knob.write_text("0\n")
    monkeypatch.setattr(sysctl, "PROC_SYS", proc)
    state = tmp_path / "state.json"

    first = sysctl.SysctlChanges(state)
    first.apply({"net.ipv4.ip_forward": "1"})
    assert knob.read_text() == "1" and state.exists()
    # The run crashes here. The next one must not take "1" for the original.
    second = sysctl.SysctlChanges(state)
    assert second.recover() and knob.read_text() == "0" and not state.exists()
    second.apply({"net.ipv4.ip_forward": "1"})
    second.restore()
    assert knob.read_text() == "0" and not state.exists()
    assert not sysctl.SysctlChanges(state).recover()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"use_exit": "nope"}, "use_exit: invalid peer ID 'nope'"),
    ({"exit_via": "auto"}, "exit_via: needs use_exit"),
    ({"use_exit": "auto", "exit_via": "auto"}, "exit_via: needs the DHT and a bootstrap peer"),
    ({"use_exit": "auto", "exit_via": "bad", "bootstrap": [BOOTSTRAP]}, "exit_via: invalid peer ID 'bad'"),
    ({"exit": True, "use_exit": "auto"}, "use_exit: an exit node does not use another exit"),
    ({"exit_allow": ["10.0.0.1/8"]}, "exit_allow: exit policy entry '10.0.0.1/8'"),
    ({"exit_deny": ["2001:db8::/32"]}, "exit_deny: exit policy entry"),
    ({"exit_capacity_mbit": -1}, "exit_capacity_mbit: -1 is out of range"),
])  # fmt: skip
def test_bad_exit_settings_are_one_line_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build({}, overrides)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_exit_settings_defaults_and_flags() -> None:
    cfg = config.build({}, {})
    assert (cfg.exit, cfg.use_exit, cfg.exit_via) == (False, "none", "")
    assert cfg.exit_allow == DEFAULT_ALLOW and cfg.exit_deny == DEFAULT_DENY
    peer = str(ID.from_pubkey(create_new_key_pair().public_key))
    cfg = config.build({"use_exit": peer}, {"exit_via": "auto", "bootstrap": [BOOTSTRAP]})
    assert cfg.use_exit == peer and cfg.exit_via == "auto"


def test_the_published_role_is_a_valid_signed_record() -> None:
    """What an exit publishes (summary, capacity, load) passes the record validator of every reader."""
    key = create_new_key_pair()
    peer = ID.from_pubkey(key.public_key)
    policy = ExitPolicy.build(("0.0.0.0/0:80,443", "[::/0]"), ("203.0.113.20/32",), "default")
    allow, deny = policy.summary()
    role = rec.ExitRole(allow=allow, deny=deny, capacity_mbit=1000, load_permille=420)
    addrs = addressing.derive(peer.to_bytes(), "default")
    record = rec.NodeRecord(peer_id=peer, network="default", ipv4=addrs.ipv4, ipv6=addrs.ipv6, address_index=0,
                            seq=1, expires=2_000_000_000, exit=role)
    opened = rec.open_sealed(rec.seal(record, key.private_key))
    rec.check(opened, network="default", now=1_999_999_000, key_peer=peer)
    assert opened.exit == role
    assert opened.exit.permits(addressing.ipaddress.ip_address("198.51.100.1"), 443)
    assert not opened.exit.permits(addressing.ipaddress.ip_address("203.0.113.20"), 443)
    assert not opened.exit.permits(addressing.ipaddress.ip_address("100.64.0.9"), 443)
