"""A TCP transfer between two lab nodes whose size and SHA-256 are compared at both ends."""

from __future__ import annotations

import subprocess
import sys

from p2pvpn.lab.demo import LabNode

SERVER = r"""
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])), family=socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(60)
digest, size = hashlib.sha256(), 0
while chunk := conn.recv(1 << 20):
    digest.update(chunk)
    size += len(chunk)
print(size, digest.hexdigest(), flush=True)
conn.close()
"""

CLIENT = r"""
import hashlib, random, socket, sys, time
rng, total = random.Random(int(sys.argv[3])), int(sys.argv[4])
digest, sent = hashlib.sha256(), 0
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as s:
    start = time.monotonic()
    while sent < total:
        chunk = rng.randbytes(min(1 << 20, total - sent))
        s.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the server closes after reading everything
    print(sent, digest.hexdigest(), time.monotonic() - start, flush=True)
"""


def hashed_transfer(src: LabNode, dst: LabNode, address: str, port: int, size: int, seed: int,
                    timeout: float = 180) -> float:
    """Send ``size`` bytes of TCP from ``src`` to ``address:port`` on ``dst``; the seconds it took.

    Asserts that both ends counted the same size and SHA-256.
    """
    server = dst.host.popen(sys.executable, "-c", SERVER, address, str(port),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dst.host.wait_listening(port)
    client = src.host.run(sys.executable, "-c", CLIENT, address, str(port), str(seed), str(size),
                          check=False, timeout=timeout, capture_output=True, text=True)
    assert client.returncode == 0, client.stderr
    received, server_err = server.communicate(timeout=30)
    assert server.returncode == 0, server_err
    sent_size, sent_digest, seconds = client.stdout.split()
    recv_size, recv_digest = received.split()
    assert int(sent_size) == int(recv_size) == size
    assert sent_digest == recv_digest
    return float(seconds)
