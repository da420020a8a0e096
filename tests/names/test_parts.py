"""Names' sans-IO parts: ping targets, the NAT mapping verdict, resolved's commands, the rate limit;
and the DNS server's sockets on loopback (UDP and TCP, with dnspython as the client)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import trio

from p2pvpn.names import resolved
from p2pvpn.names.netcheck import Observation, mapping_behaviour
from p2pvpn.names.server import DnsServer, TokenBucket
from p2pvpn.names.table import Member, NameTable, zone_name
from p2pvpn.names.targets import Target, UnknownTarget, resolve

OWN = Target("12D3own", "alpha", "100.64.0.1", "fd00::1")
BETA = Target("12D3beta", "beta", "100.64.0.2", "fd00::2")
STATIC = Target("12D3static", None, "100.64.0.3", "fd00::3")


# -- ping targets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["beta", "BETA", "beta.lab.internal", "beta.lab.internal.", "Beta.ABC.internal", "100.64.0.2",
                                  "fd00::2", "12D3beta"])
def test_a_target_is_a_name_a_peer_id_or_an_overlay_address(text: str) -> None:
    assert resolve(text, [BETA, STATIC], ["lab.internal", "abc.internal"], OWN) == BETA


def test_a_peer_without_a_name_is_found_by_address_or_id() -> None:
    assert resolve("100.64.0.3", [BETA, STATIC], [], OWN) == STATIC
    assert resolve("12D3static", [BETA, STATIC], [], OWN) == STATIC


@pytest.mark.parametrize("text", ["gamma", "100.64.0.9", "gamma.lab.internal", "", "beta.other.internal"])
def test_unknown_targets_are_one_line_errors(text: str) -> None:
    with pytest.raises(UnknownTarget) as caught:
        resolve(text, [BETA, STATIC], ["lab.internal", "abc.internal"], OWN)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["alpha", "100.64.0.1", "12D3own"])
def test_pinging_ourselves_is_refused(text: str) -> None:
    with pytest.raises(UnknownTarget, match="this node itself"):
        resolve(text, [BETA], ["lab.internal"], OWN)


# -- NAT mapping ----------------------------------------------------------------------------------------------

def obs(observer: str, external: tuple[str, int], local: tuple[str, int] | None) -> Observation:
    return Observation(observer, external, local)


def test_no_observation_is_unknown() -> None:
    assert mapping_behaviour([], ["198.18.1.2"]).verdict == "unknown"


def test_our_own_address_seen_means_no_nat() -> None:
    seen = [obs("198.18.1.1", ("198.18.1.2", 40001), ("198.18.1.2", 40001)),
            obs("198.18.1.3", ("198.18.1.2", 4242), ("198.18.1.2", 4242))]
    assert mapping_behaviour(seen, ["198.18.1.2", "127.0.0.1"]).verdict == "none"


def test_one_local_port_seen_at_one_outside_port_by_two_peers_is_endpoint_independent() -> None:
    seen = [obs("198.18.0.10", ("198.18.0.1", 5000), ("198.18.10.2", 4242)),
            obs("198.18.0.11", ("198.18.0.1", 5000), ("198.18.10.2", 4242))]
    assert mapping_behaviour(seen, ["198.18.10.2"]).verdict == "endpoint-independent"


def test_one_local_port_seen_at_two_outside_ports_is_endpoint_dependent() -> None:
    seen = [obs("198.18.0.10", ("198.18.0.1", 5000), ("198.18.10.2", 4242)),
            obs("198.18.0.11", ("198.18.0.1", 5001), ("198.18.10.2", 4242)),
            obs("198.18.0.12", ("198.18.0.1", 33000), ("198.18.10.2", 33000))]
    result = mapping_behaviour(seen, ["198.18.10.2"])
    assert result.verdict == "endpoint-dependent" and "5000" in result.why and "5001" in result.why


def test_kept_source_ports_from_two_peers_are_endpoint_independent() -> None:
    seen = [obs("198.18.0.10", ("198.18.0.1", 40001), ("198.18.10.2", 40001)),
            obs("198.18.0.11", ("198.18.0.1", 40002), ("198.18.10.2", 40002))]
    assert mapping_behaviour(seen, ["198.18.10.2"]).verdict == "endpoint-independent"


def test_changed_ports_from_different_source_ports_cannot_tell() -> None:
    seen = [obs("198.18.0.10", ("198.18.0.1", 61001), ("198.18.10.2", 40001)),
            obs("198.18.0.11", ("198.18.0.1", 61002), ("198.18.10.2", 40002))]
    assert mapping_behaviour(seen, ["198.18.10.2"]).verdict == "unknown"


def test_one_observer_cannot_tell() -> None:
    seen = [obs("198.18.0.10", ("198.18.0.1", 40001), ("198.18.10.2", 40001))]
    assert mapping_behaviour(seen, ["198.18.10.2"]).verdict == "unknown"


# -- systemd-resolved -----------------------------------------------------------------------------------------

def test_resolved_commands_route_only_the_zone_to_our_servers() -> None:
    commands = resolved.setup_commands("/usr/bin/resolvectl", "p2pvpn0", ["100.64.0.1", "fd00::1"],
                                       ["lab.internal.", "abc.internal"])
    assert commands == [
        ["/usr/bin/resolvectl", "dns", "p2pvpn0", "100.64.0.1", "fd00::1"],
        ["/usr/bin/resolvectl", "domain", "p2pvpn0", "~lab.internal", "~abc.internal"],
        ["/usr/bin/resolvectl", "default-route", "p2pvpn0", "false"],
    ]
    assert resolved.undo_commands("resolvectl", "p2pvpn0") == [["resolvectl", "revert", "p2pvpn0"]]


def test_resolved_absent_reasons(tmp_path: Path) -> None:
    assert "not installed" in (resolved.absent_reason(None, tmp_path) or "")
    assert "not running" in (resolved.absent_reason("/usr/bin/resolvectl", tmp_path / "missing") or "")
    assert "namespace" in (resolved.absent_reason("/usr/bin/resolvectl", tmp_path, "net:[1]", "net:[2]") or "")
    assert resolved.absent_reason("/usr/bin/resolvectl", tmp_path, "net:[1]", "net:[1]") is None


def test_without_resolved_the_hook_logs_once_and_runs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture,
                                                               tmp_path: Path) -> None:
    monkeypatch.setattr(resolved.shutil, "which", lambda name: None)
    ran: list[object] = []
    monkeypatch.setattr(resolved.subprocess, "run", lambda *a, **k: ran.append(a))
    hook = resolved.ResolvedHook("p2pvpn0", ["100.64.0.1"], ["lab.internal"])
    with caplog.at_level("INFO", logger="p2pvpn.names.resolved"):
        hook.install()
        hook.remove()
    assert ran == [] and not hook.installed
    lines = [r for r in caplog.records if "systemd-resolved hook off" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "INFO" and "resolvectl is not installed" in lines[0].getMessage()


def test_a_running_resolved_gets_the_commands_and_revert_on_remove(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import subprocess

    monkeypatch.setattr(resolved.shutil, "which", lambda name: "/usr/bin/resolvectl")
    monkeypatch.setattr(resolved, "RESOLVED_RUN_DIR", tmp_path)
    monkeypatch.setattr(resolved, "_netns", lambda pid: "net:[1]")
    ran: list[list[str]] = []

    def run(command: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(resolved.subprocess, "run", run)
    hook = resolved.ResolvedHook("p2pvpn0", ["100.64.0.1"], ["lab.internal"])
    hook.install()
    assert hook.installed and [c[1] for c in ran] == ["dns", "domain", "default-route"]
    hook.remove()
    assert ran[-1] == ["/usr/bin/resolvectl", "revert", "p2pvpn0"] and not hook.installed


# -- rate limit -----------------------------------------------------------------------------------------------

def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # 10/s: one more after 0.1 s


# -- the server on loopback -----------------------------------------------------------------------------------

def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the kernel picks UDP's; TCP's checked; bounded tries)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


async def test_the_server_answers_over_udp_and_tcp_and_counts_malformed() -> None:
    table = NameTable(zone_name("lab", "a" * 32), [Member("alpha", b"\x00" * 38, ipaddress.IPv4Address("100.64.0.7"),
                                                          ipaddress.IPv6Address("fd00::7"))])
    port = free_port()
    server = DnsServer([ipaddress.IPv4Address("127.0.0.1")], lambda: table, port=port)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        query = dns.message.make_query("alpha.lab.internal", "A")

        def ask() -> tuple[dns.message.Message, dns.message.Message]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                junk.sendto(b"\x00\x01garbage", ("127.0.0.1", port))
            return (dns.query.udp(query, "127.0.0.1", port=port, timeout=3),
                    dns.query.tcp(dns.message.make_query("nobody.lab.internal", "AAAA"), "127.0.0.1", port=port,
                                  timeout=3))

        over_udp, over_tcp = await trio.to_thread.run_sync(ask)
        nursery.cancel_scope.cancel()
    assert {r.to_text() for rrset in over_udp.answer for r in rrset} == {"100.64.0.7"}
    assert over_tcp.rcode() == dns.rcode.NXDOMAIN
    assert server.counters["answered"] == 1 and server.counters["nxdomain"] == 1
    assert server.counters["malformed"] == 1
    assert server.status()["listening"] == [f"127.0.0.1:{port}"]


def test_dnspython_loads_with_the_first_query_not_with_the_responder() -> None:
    """A node's responder runs without dnspython (and the importlib.metadata it imports) until a query comes."""
    import json
    import os
    import subprocess
    import sys

    probe = (
        "import ipaddress, json, sys\n"
        "import trio\n"
        "import p2pvpn.node\n"
        "from p2pvpn.names.server import DnsServer\n"
        "from p2pvpn.names.table import Member, NameTable, zone_names\n"
        "zones = zone_names('lab', 'a' * 32)\n"
        "table = NameTable(zones[0], [Member('alpha', bytes(38), ipaddress.IPv4Address('100.64.0.7'),\n"
        "                                    ipaddress.IPv6Address('fd00::7'))], zones[1:])\n"
        "server = DnsServer([ipaddress.IPv4Address('127.0.0.1')], lambda: table, port=0)\n"
        "status = server.status()\n"
        "before = [m for m in ('dns', 'importlib.metadata') if m in sys.modules]\n"
        "query = bytes.fromhex('abcd01000001000000000000') + b'\\x05alpha\\x03lab\\x08internal\\x00' + bytes.fromhex('00010001')\n"
        "async def ask():\n"
        "    return server._answer(query, tcp=False)\n"
        "response = trio.run(ask)\n"
        "import dns.message\n"
        "answer = dns.message.from_wire(response)\n"
        "print(json.dumps({'before': before, 'after': 'dns' in sys.modules, 'zones': status['zones'],\n"
        "                  'answer': [r.to_text() for rrset in answer.answer for r in rrset]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"before": [], "after": True, "zones": ["lab.internal", f"{'a' * 32}.internal"],
                   "answer": ["100.64.0.7"]}


def test_a_zone_name_too_long_for_dns_is_refused() -> None:
    """The zone is text until the first query; a name dnspython would refuse is refused when made."""
    long_suffix = ".".join(["a" * 63] * 4)  # 4 labels of 63: a valid suffix, but with the label over 255 bytes
    with pytest.raises(ValueError, match="longer than a DNS name"):
        zone_name("lab", "b" * 32, long_suffix)
    assert zone_name("lab", "b" * 32, ".".join(["a" * 63] * 3)).to_text().endswith(".")
