"""CPU per datagram of the datagram socket's receive syscalls: a recvmsg each, or a recvmmsg per batch.

Why: through a link without GRO (the WAN emulator under ``low``) every
datagram arrives alone, and the receiving node paid one ``recvmsg`` (and
its Python objects) per datagram. This fills a real loopback UDP socket
(``UDP_GRO`` on, as the node sets it; separate sends are not coalesced on
loopback, like the emulator's frames) with ``--fill`` datagrams of
``--size`` bytes, then drains it the way the node's receive task does
(``udp_socket._drain`` or ``_drain_mmsg``, batch after batch until empty)
and takes the draining thread's CPU time; the two variants alternate,
``--rounds`` times each, so other load hits both alike.

    python bench/datagram_recv.py [--fill 1500] [--size 1449] [--rounds 9] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p2pvpn.datagram import mmsg  # noqa: E402
from p2pvpn.datagram.udp_socket import (  # noqa: E402
    BUFFER_BYTES, RECV_MMSG_SLOTS, UDP_GRO, _drain, _drain_mmsg,
)  # fmt: skip

SOL_UDP = 17
FILL_WAIT = 200  # 10 ms polls for the loopback queue to settle


def fill(sender: socket.socket, receiver: socket.socket, count: int, size: int) -> int:
    """Send ``count`` datagrams; returns how many the receive buffer holds (FIONREAD grows until settled)."""
    target = receiver.getsockname()
    payload = bytes(size)
    for _ in range(count):
        sender.sendto(payload, target)
    return count


def drain_all(receiver: socket.socket, use_mmsg: bool, rx: mmsg.MmsgReceiver, expect: int) -> tuple[int, float]:
    """Drain until ``expect`` datagrams came (bounded); (datagrams, this thread's CPU seconds)."""
    got = 0
    started = time.thread_time()
    for _ in range(expect + FILL_WAIT):
        batch, _more = _drain_mmsg(receiver, rx) if use_mmsg else _drain(receiver)
        got += len(batch)
        if got >= expect:
            break
        if not batch:
            time.sleep(0.01)  # not counted much: sleeping takes no CPU
    return got, time.thread_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=1500, help="datagrams queued before each drain")
    parser.add_argument("--size", type=int, default=1449, help="bytes per datagram (1420 + header and tag)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (10 <= args.fill <= 100_000 and 1 <= args.size <= 9000 and 1 <= args.rounds <= 100):
        parser.error("--fill 10..100000, --size 1..9000, --rounds 1..100")
    if not mmsg.available():
        print("datagram_recv: libc has no recvmmsg here", file=sys.stderr)
        return 2
    rx = mmsg.MmsgReceiver(RECV_MMSG_SLOTS)
    results: dict[str, list[float]] = {"recvmsg": [], "recvmmsg": []}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:  # fmt: skip
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        receiver.setsockopt(SOL_UDP, UDP_GRO, 1)
        receiver.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), BUFFER_BYTES * 4)
        for _ in range(args.rounds):
            for name in ("recvmsg", "recvmmsg"):
                sent = fill(sender, receiver, args.fill, args.size)
                got, cpu = drain_all(receiver, name == "recvmmsg", rx, sent)
                if got != sent:
                    print(f"datagram_recv: {name} drained {got} of {sent} (receive buffer too small?)",
                          file=sys.stderr)  # fmt: skip
                    return 1
                results[name].append(cpu / got * 1e6)
    rx.close()
    out: dict[str, object] = {f"{k}_us_per_datagram": round(statistics.median(v), 3) for k, v in results.items()}
    out["ratio_mmsg_over_msg"] = round(statistics.median(
        m / s for m, s in zip(results["recvmmsg"], results["recvmsg"])), 3)  # fmt: skip
    out["rounds"] = args.rounds
    print(json.dumps(out) if args.json else "\n".join(f"{k:28} {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
