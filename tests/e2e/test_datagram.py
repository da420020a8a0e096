"""The datagram path (docs/protocol.md §16) between real processes in namespaces.

Two nodes on one switch (conftest's lab). The path comes up by itself; a
TCP transfer through the overlay then travels as UDP datagrams and arrives
with the sender's SHA-256. An nft rule that drops UDP to a node's port moves
the tunnel back to the stream within the path timeout, and traffic keeps
flowing. A datagram captured off the wire and replayed, and a forged one,
are dropped and counted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from p2pvpn.lab.demo import Lab, LabNode, wait_for

from .transfer import hashed_transfer

pytestmark = pytest.mark.netns

TRANSFER_BYTES = 8 * 1024 * 1024
PORT = 5003
UP_WITHIN = 15.0       # probes every second from the start
FALLBACK_WITHIN = 15.0  # PATH_TIMEOUT (6 s) plus polling slack on a loaded machine



# Sniffs b's eth0 (AF_PACKET) for one data datagram (type 1) to b's UDP port,
# then sends it again (a replay), and a forged copy with a fresh counter.
SNIFF_AND_REPLAY = r"""
import socket, struct, sys, time
port, target = int(sys.argv[1]), sys.argv[2]
sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.ntohs(0x0800))
sniffer.bind(("eth0", 0x0800))
sniffer.settimeout(1.0)
deadline = time.monotonic() + 20
captured = None
while captured is None and time.monotonic() < deadline:
    try:
        frame = sniffer.recv(65535)
    except TimeoutError:
        continue
    ihl = (frame[0] & 0x0F) * 4
    if frame[9] != 17 or struct.unpack_from(">H", frame, ihl + 2)[0] != port:
        continue
    payload = frame[ihl + 8:]
    if payload and payload[0] == 1:
        captured = payload
if captured is None:
    sys.exit("no data datagram seen")
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.sendto(captured, (target, port))                       # replay
forged = captured[:5] + struct.pack(">Q", 1 << 59) + captured[13:]
out.sendto(forged, (target, port))                         # header changed: the tag fails
print(len(captured), flush=True)
"""


def _view(node: LabNode, other: LabNode) -> dict[str, Any]:
    return node.peer_status(other) or {}


def _wait_path(lab: Lab, want: str, within: float) -> None:
    a, b = lab.nodes
    ok = wait_for(lambda: _view(a, b).get("data_path") == want and _view(b, a).get("data_path") == want, within)
    assert ok, f"data path is not {want}: a sees {_view(a, b)}, b sees {_view(b, a)}"


def _transfer(a: LabNode, b: LabNode, seed: int) -> None:
    hashed_transfer(a, b, b.ipv4, PORT, TRANSFER_BYTES, seed, timeout=120)  # same size, same SHA-256


def test_transfer_over_the_datagram_path_arrives_intact(lab2: Lab) -> None:
    a, b = lab2.nodes
    _wait_path(lab2, "udp", UP_WITHIN)
    before = _view(b, a)
    _transfer(a, b, 20261130)
    after = _view(b, a)
    assert after["data_path"] == "udp"
    # 8 MiB in <= 1400-byte packets: thousands of datagrams, and (almost) no Data frame on the stream.
    assert after["udp_rx_packets"] - before["udp_rx_packets"] >= TRANSFER_BYTES // 1400
    assert after["frames_in"] - before["frames_in"] < 100  # keepalives are not counted; a few Data frames at most
    assert after["udp_endpoint"] == f"{a.address}:{a.port}"  # a's UDP socket shares its TCP port number
    status = b.status()
    assert status["udp"]["port"] == b.port and status["udp"]["udp_bad_auth"] == 0


def test_blocked_udp_falls_back_to_the_stream(lab2: Lab) -> None:
    a, b = lab2.nodes
    _wait_path(lab2, "udp", UP_WITHIN)
    b.host.run("nft", "-f", "-", input=(
        "table inet p2v_block_udp {\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    udp dport {b.port} drop\n"
        "  }\n"
        "}\n"
    ), text=True)  # fmt: skip
    _wait_path(lab2, "stream", FALLBACK_WITHIN)
    assert a.ping(b.ipv4).returncode == 0
    before = _view(b, a)
    _transfer(a, b, 7)
    after = _view(b, a)
    assert after["data_path"] == "stream"
    assert after["udp_rx_packets"] == before["udp_rx_packets"]  # nothing came over UDP
    assert after["frames_in"] > before["frames_in"]


def test_replayed_and_forged_datagrams_are_dropped_and_counted(lab2: Lab) -> None:
    a, b = lab2.nodes
    _wait_path(lab2, "udp", UP_WITHIN)
    sniffer = b.host.popen(sys.executable, "-c", SNIFF_AND_REPLAY, str(b.port), b.address,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the sniffer's socket is open before the first ping
    assert a.ping(b.ipv4, count=5).returncode == 0
    out, err = sniffer.communicate(timeout=30)
    assert sniffer.returncode == 0, err
    assert int(out) >= 30
    counted = wait_for(lambda: (b.status()["udp"]["udp_replayed"] >= 1 and b.status()["udp"]["udp_bad_auth"] >= 1),
                       10)
    assert counted, b.status()["udp"]
    assert _view(b, a)["data_path"] == "udp"  # nothing of it disturbed the path
    assert a.ping(b.ipv4).returncode == 0
