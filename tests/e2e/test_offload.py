"""TUN segmentation offload end to end: real kernels, real TUNs, real TCP and UDP.

Two nodes as in every lab (see conftest.py). With offload at both ends the
kernel's 64 KiB super-packets cross the tunnel whole; with offload at one end
only, that end cuts them in software and the other never notices. Either
way 50 MiB of TCP arrive with the sender's SHA-256, and nothing is counted
as a bad offload record.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from p2pvpn.lab.demo import Lab, LabNode

from .transfer import hashed_transfer

pytestmark = pytest.mark.netns

TRANSFER_BYTES = 50 * 1024 * 1024
PORT = 5002



# UDP GSO (UDP_SEGMENT): each sendto() of 8000 bytes leaves the socket as one
# super-packet of eight 1000-byte datagrams.
UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(10)
got = []
try:
    while len(got) < int(sys.argv[3]):
        got.append(s.recv(65535))
except TimeoutError:
    pass
print(len(got), sum(map(len, got)), len({bytes(d) for d in got}), flush=True)
"""

UDP_CLIENT = r"""
import socket, sys, time
SOL_UDP, UDP_SEGMENT = 17, 103
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(SOL_UDP, UDP_SEGMENT, 1000)
for i in range(int(sys.argv[3])):
    payload = b"".join(bytes([i, j]) * 500 for j in range(8))  # 8 distinct datagrams
    s.sendto(payload, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.01)
"""


def transfer(src: LabNode, dst: LabNode, address: str, seed: int) -> float:
    """Send TRANSFER_BYTES of TCP from ``src`` to ``address`` on ``dst``; Mbit/s. Asserts size and hash."""
    seconds = hashed_transfer(src, dst, address, PORT, TRANSFER_BYTES, seed)
    mbit_s = TRANSFER_BYTES * 8 / seconds / 1e6
    print(f"{src.name} -> {address}: {TRANSFER_BYTES / 2**20:.0f} MiB at {mbit_s:.0f} Mbit/s")
    return mbit_s


def peer(node: LabNode, other: LabNode) -> dict:  # type: ignore[type-arg]
    for _ in range(3):  # the control socket may be briefly busy under load
        status = node.peer_status(other)
        if status is not None:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{node.name} does not know {other.name}")


def no_bad_offload(*nodes: LabNode) -> None:
    for node in nodes:
        status = node.status()
        assert status["drops"].get("bad_offload", 0) == 0
        for p in status["peers"]:
            assert p["drops"].get("bad_offload", 0) == 0, (node.name, p["drops"])


def test_offload_at_both_ends_moves_super_packets(make_lab) -> None:  # type: ignore[no-untyped-def]
    # The stream's gso/1 path: without --no-udp the datagram path (docs/protocol.md §16) would
    # carry the data as MTU-sized datagrams instead (tests/e2e/test_datagram.py).
    lab: Lab = make_lab(2, start=False)
    lab.start("--no-udp")
    lab.wait_up()
    a, b = lab.nodes
    assert a.status()["offload"] and b.status()["offload"], "this kernel refused TUN offload"
    assert peer(a, b)["offload"] is True and peer(b, a)["offload"] is True
    before = peer(b, a)
    transfer(a, b, b.ipv4, seed=1)
    transfer(a, b, b.ipv6, seed=2)
    after = peer(b, a)
    packets = after["packets_in"] - before["packets_in"]
    # Super-packets: far fewer packets than MTU-sized ones would need.
    assert (after["bytes_in"] - before["bytes_in"]) / packets > 4 * b.status()["mtu"], packets
    no_bad_offload(a, b)


def test_offload_at_one_end_only(make_lab) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(2, start=False)
    a, b = lab.nodes
    a.start([b])
    b.start([a], "--no-offload")
    lab.wait_up()
    assert a.status()["offload"] is True and b.status()["offload"] is False
    assert peer(a, b)["offload"] is False and peer(b, a)["offload"] is False
    transfer(a, b, b.ipv4, seed=3)   # a cuts its super-packets for b
    transfer(b, a, a.ipv6, seed=4)   # b's plain packets reach a's offload TUN
    assert peer(b, a)["packets_in"] >= TRANSFER_BYTES // b.status()["mtu"]  # MTU-sized, as b expects
    no_bad_offload(a, b)


@pytest.mark.parametrize("offload_b", [True, False], ids=["both", "sender-only"])
def test_udp_super_packets_arrive_as_datagrams(make_lab, offload_b: bool) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = make_lab(2, start=False)
    a, b = lab.nodes
    a.start([b])
    b.start([a], *(() if offload_b else ("--no-offload",)))
    lab.wait_up()
    sends = 25
    server = b.host.popen(
        sys.executable, "-c", UDP_SERVER, b.ipv4, str(PORT), str(sends * 8),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    b.host.wait_listening(PORT, udp=True)
    client = a.host.run(sys.executable, "-c", UDP_CLIENT, b.ipv4, str(PORT), str(sends), check=False, timeout=60)
    assert client.returncode == 0, client.stderr
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    count, size, distinct = map(int, out.split())
    assert (count, size, distinct) == (sends * 8, sends * 8000, sends * 8)
    no_bad_offload(a, b)
