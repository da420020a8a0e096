"""CPU per datagram of the datagram path's send side, in-process: TSO records -> plain packets -> sealed datagrams.

Why: on the datagram path the sender cuts every 64 KiB super-packet the TUN
hands it into 1400-byte packets (``offload.segment``, checksums in Python)
and seals each one (AES-GCM); py-spy put a third of the sending node's busy
time there. This replays that step without sockets or a TUN: records of one
TCP flow (44 segments of 1380 bytes each, as the kernel's TSO makes them)
go through ``segment`` and ``DatagramSession.seal_packets``, and the script
prints µs of CPU per datagram for each part.

``--against DIR`` measures another checkout too (say, the commit before a
change), alternating the two in child processes round by round so load from
other processes hits both alike, and prints the ratio of the medians.

    python bench/datagram_tx.py [--records 200] [--rounds 5] [--against DIR] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SEGMENT = 1380
PER_RECORD = 44


def measure(code: Path, records: int) -> dict[str, float]:
    """One round with the p2pvpn package under ``code``: µs of CPU per datagram, segment and seal."""
    sys.path.insert(0, str(code))
    from p2pvpn.datagram.epochs import KeySchedule
    from p2pvpn.datagram.session import DatagramSession
    from p2pvpn.dataplane.offload import segment
    from p2pvpn.testing.superpackets import tcp_record

    rng = random.Random(1)
    size = SEGMENT * PER_RECORD
    batch = [tcp_record("100.64.0.1", "100.64.0.2", rng.randbytes(size), SEGMENT,
                        seq=1000 + i * size, ip_id=1 + i * PER_RECORD) for i in range(records)]  # fmt: skip
    indices = itertools.count(1)
    a = DatagramSession(KeySchedule(True, b"A" * 38, b"B" * 38, 4001, lambda: next(indices)))
    b = DatagramSession(KeySchedule(False, b"B" * 38, b"A" * 38, 4002, lambda: next(indices)))
    offer_a, offer_b = a.keys.start(), b.keys.start()
    a.keys.receive_offer(offer_b, 0.0)
    b.keys.receive_offer(offer_a, 0.0)
    started = time.process_time()
    packets: list[bytes] = []
    for record in batch:
        cut = segment(record)
        assert cut is not None
        packets += cut
    segmented = time.process_time()
    sealed = a.seal_packets(packets, 0.0)
    done = time.process_time()
    assert len(sealed) == records * PER_RECORD
    n = len(sealed)
    return {"segment_us": (segmented - started) / n * 1e6, "seal_us": (done - segmented) / n * 1e6,
            "total_us": (done - started) / n * 1e6}  # fmt: skip


def _child(code: Path, records: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(code), "--records", str(records)],
                         capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200, help="64 KiB records per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout to measure alternately (e.g. the base commit)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (10 <= args.records <= 5000 and 1 <= args.rounds <= 50):
        parser.error("--records 10..5000, --rounds 1..50")
    if args.child is not None:
        print(json.dumps(measure(args.child, args.records)))
        return 0
    if args.against is not None and not (args.against / "p2pvpn" / "dataplane" / "offload.py").is_file():
        parser.error(f"--against {args.against}: no p2pvpn checkout there")
    trees = {"this": REPO} | ({"against": args.against.resolve()} if args.against is not None else {})
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, code in trees.items():
                rounds[name].append(_child(code, args.records))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"datagram_tx: a measurement failed: {exc}", file=sys.stderr)
        return 1
    out: dict[str, object] = {
        name: {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
        for name, runs in rounds.items()
    }
    if args.against is not None:
        this, against = out["this"], out["against"]
        out["ratio_total"] = round(this["total_us"] / against["total_us"], 3)  # type: ignore[index]
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:12} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
