"""``p2pvpn lab``, the newcomer's first command, needs nothing but root, iproute2 and the package.

The lab sends its own ICMP and ICMPv6 echoes from Python (p2pvpn.lab.echo);
here it runs with a PATH that holds ``ip`` and nothing else, so a ``ping``
binary on this machine cannot help it. The echo's packet work is checked
without a network.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p2pvpn.dataplane.packet import checksum
from p2pvpn.lab.echo import ICMP6_ECHO_REPLY, ICMP_ECHO_REPLY, echo_request, parse_echo_reply

LAB_TIMEOUT = 300.0


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


@pytest.mark.netns
def test_the_lab_passes_without_a_ping_binary(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ip = shutil.which("ip")
    assert ip is not None
    (bin_dir / "ip").symlink_to(ip)
    env = {**os.environ, "PATH": str(bin_dir), "COLUMNS": "100"}
    result = subprocess.run([sys.executable, "-m", "p2pvpn", "lab"], capture_output=True, text=True,
                            timeout=LAB_TIMEOUT, env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "all 12 pings answered" in output, output
    assert "Traceback" not in output
