"""``p2pvpn lab``, the newcomer's first command, needs nothing but root, iproute2 and the package.

The lab forms an owned network with the membership commands, pings across
it, and revokes one node. It sends its own ICMP and ICMPv6 echoes from
Python (p2pvpn.lab.echo); here it runs with a PATH that holds ``ip`` and
nothing else, so a ``ping`` binary on this machine cannot help it, and its
``--json`` summary must show the revocation really cut the node off. The
echo's packet work, the judgement of the echoes after a revocation and the
lab's failure path are checked without a network.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from p2pvpn import identity
from p2pvpn.cli import app
from p2pvpn.cli_membership import create_network
from p2pvpn.dataplane.packet import checksum
from p2pvpn.lab import story
from p2pvpn.lab.demo import PingResult
from p2pvpn.lab.echo import ICMP6_ECHO_REPLY, ICMP_ECHO_REPLY, echo_request, parse_echo_reply
from p2pvpn.lab.owned import _error_line, judge_cut, revoked_since
from p2pvpn.lab.topology import LabError

LAB_TIMEOUT = 600.0  # the lab targets < 60 s; a machine shared with other jobs can take far longer


def test_an_ipv4_echo_request_has_a_correct_checksum() -> None:
    request = echo_request(4, ident=0x1234, seq=7, payload=b"abc")
    kind, code, _csum, ident, seq = struct.unpack("!BBHHH", request[:8])
    assert (kind, code, ident, seq) == (8, 0, 0x1234, 7)
    assert request[8:] == b"abc"
    assert checksum(request) == 0  # a message including a correct checksum sums to 0


def test_an_ipv6_echo_request_leaves_the_checksum_to_the_kernel() -> None:
    request = echo_request(6, ident=1, seq=2)
    assert request[:2] == bytes([128, 0]) and request[2:4] == b"\x00\x00"


def _ipv4(payload: bytes, ihl: int = 5) -> bytes:
    header = bytes([0x40 | ihl]) + bytes(ihl * 4 - 1)
    return header + payload


def test_replies_are_recognised_and_everything_else_is_not() -> None:
    reply4 = struct.pack("!BBHHH", ICMP_ECHO_REPLY, 0, 0, 42, 9) + b"x"
    assert parse_echo_reply(4, _ipv4(reply4)) == (42, 9)
    assert parse_echo_reply(4, _ipv4(reply4, ihl=6)) == (42, 9)  # IP options are skipped
    reply6 = struct.pack("!BBHHH", ICMP6_ECHO_REPLY, 0, 0, 42, 10)
    assert parse_echo_reply(6, reply6) == (42, 10)
    assert parse_echo_reply(4, _ipv4(echo_request(4, 42, 9))) is None  # our own request, seen on loopback
    assert parse_echo_reply(6, echo_request(6, 42, 9)) is None
    assert parse_echo_reply(4, _ipv4(struct.pack("!BBHHH", 3, 1, 0, 0, 0))) is None  # an unreachable error
    assert parse_echo_reply(4, b"\x45" + bytes(10)) is None  # truncated
    assert parse_echo_reply(6, b"\x81\x00") is None
    assert parse_echo_reply(4, b"") is None


def _echo(src: str, dst: str, family: str, received: int, sent: int = 3) -> PingResult:
    node = SimpleNamespace  # judge_cut only reads the names
    return PingResult(node(name=src), node(name=dst), family, received == sent, 1.0 if received else None,  # type: ignore[arg-type]
                      received)


def _mesh(answer: Any) -> list[PingResult]:
    names = ["n1", "n2", "n3"]
    return [_echo(a, b, fam, answer(a, b)) for a in names for b in names if a != b for fam in ("IPv4", "IPv6")]


def test_a_clean_cut_is_judged_ok() -> None:
    verdict = judge_cut(_mesh(lambda a, b: 0 if "n3" in (a, b) else 3), "n3")
    assert verdict.ok and verdict.problems == ()
    assert verdict.to_revoked == (0, 8) and verdict.among_others == (4, 4)


def test_one_echo_through_to_the_revoked_node_fails_the_cut() -> None:
    verdict = judge_cut(_mesh(lambda a, b: 1 if (a, b) == ("n1", "n3") else (0 if "n3" in (a, b) else 3)), "n3")
    assert not verdict.ok
    assert verdict.problems == ("n1 -> n3 IPv4 still answered", "n1 -> n3 IPv6 still answered")
    assert verdict.to_revoked == (2, 8)


def test_a_lost_echo_among_the_others_fails_the_cut() -> None:
    verdict = judge_cut(_mesh(lambda a, b: 0 if "n3" in (a, b) else (2 if (a, b) == ("n2", "n1") else 3)), "n3")
    assert not verdict.ok and verdict.among_others == (2, 4)
    assert verdict.problems == ("n2 -> n1 IPv4 got no reply", "n2 -> n1 IPv6 got no reply")


def test_the_revocation_clock_starts_no_later_than_the_signature(tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    create_network(owner, "lab")
    victim = str(identity.peer_id(identity.create(tmp_path / "victim.key")))
    before = time.time()
    app(["revoke", victim, "--dir", str(owner)], standalone_mode=False)
    after = time.time()
    since = revoked_since(owner, victim)
    assert before - 1 <= since <= after
    other = str(identity.peer_id(identity.create(tmp_path / "other.key")))
    with pytest.raises(LabError, match="does not hold"):
        revoked_since(owner, other)


def test_a_failing_command_is_told_by_its_error_line_not_its_logs() -> None:
    stderr = "2026-11-30 15:00:00,000 INFO p2pvpn.x: starting\np2pvpn: error: the invite was already used\n"
    assert _error_line(stderr) == "p2pvpn: error: the invite was already used"
    assert _error_line("") == "no error output"


def test_a_failed_step_exits_1_and_says_so_in_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:  # the lab cannot be built (say, the switch cannot be made)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> None:
            raise LabError("`ip link add` failed (exit 2): no bridge module")

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(story, "require_netns", lambda *tools: None)
    monkeypatch.setattr(story, "OwnedLab", Broken)
    monkeypatch.setattr(story.os, "geteuid", lambda: 0)
    summaries: list[dict[str, Any]] = []
    out = io.StringIO()
    code = story.run_lab(3, console=Console(file=out, width=100), summary=summaries.append)
    assert code == 1
    assert "lab failed: `ip link add` failed (exit 2): no bridge module" in out.getvalue()
    (summary,) = summaries
    assert summary["ok"] is False and "no bridge module" in summary["error"]
    assert summary["revocation"] == {}


@pytest.mark.netns
def test_the_lab_forms_a_network_then_a_revocation_cuts_a_node_off(tmp_path: Path) -> None:
    """Without a ping binary: create, invite, join, up, ping, revoke, and the summary proves each step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ip = shutil.which("ip")
    assert ip is not None
    (bin_dir / "ip").symlink_to(ip)
    env = {**os.environ, "PATH": str(bin_dir), "COLUMNS": "100"}
    result = subprocess.run([sys.executable, "-m", "p2pvpn", "lab", "--json"], capture_output=True, text=True,
                            timeout=LAB_TIMEOUT, env=env, check=False)
    story_text = result.stderr
    assert result.returncode == 0, story_text + result.stdout
    assert "all 12 pings answered" in story_text, story_text
    assert "Traceback" not in story_text + result.stdout
    summary = json.loads(result.stdout)
    assert summary["ok"] is True and summary["error"] is None

    commands = [(c["node"], c["command"]) for c in summary["commands"]]
    typed = [" ".join(cmd.split()[:2]) for _node, cmd in commands]
    assert typed.count("p2pvpn network") == 1 and typed.count("p2pvpn invite") == 2
    assert typed.count("p2pvpn join") == 2 and typed.count("p2pvpn up") == 3 and typed.count("p2pvpn revoke") == 1
    where = {(node, " ".join(cmd.split()[:2])) for node, cmd in commands}
    assert {("n2", "p2pvpn join"), ("n3", "p2pvpn join"), ("n1", "p2pvpn revoke"), ("n1", "p2pvpn invite")} <= where
    assert {node for node, cmd in commands if cmd.startswith(("p2pvpn join", "p2pvpn up"))} == {"n1", "n2", "n3"}
    for _node, cmd in commands:  # members are admitted by certificates: nobody is listed or trusted by flag
        assert not any(flag in cmd.split() for flag in ("--peer", "--allow-peer", "--allow-any-peer",
                                                        "--trust-members", "--bootstrap")), cmd

    members = {m["name"]: m for m in summary["members"]}
    assert set(members) == {"owner", "n2", "n3"}
    assert all(m["online"] and not m["revoked"] for m in members.values())
    assert summary["mesh"]["pings"] == summary["mesh"]["answered"] == 12

    cut = summary["revocation"]
    assert cut["node"] == "n3" and cut["peer_id"] == members["n3"]["peer_id"]
    assert set(cut["tunnels_gone_after_s"]) == {"n1", "n2"}
    assert all(0 <= s <= 10 for s in cut["tunnels_gone_after_s"].values()), cut
    assert cut["pings_with_revoked"] == {"answered": 0, "sent": 8}
    assert cut["pings_among_others"] == {"answered": 4, "sent": 4}
    assert cut["problems"] == []
    assert cut["members_revoked"] is True and cut["members_online"] is False
