"""Cost of one /metrics page (p2pvpn.metrics.render_snapshot) for 10, 100 and 1000 peers.

The page is rendered in a worker thread, off the event loop; this says how long a scrape's thread
works and how big the page is. Run: python bench/metrics_scrape.py  (prints one line per size).
"""

from __future__ import annotations

import time

from p2pvpn import metrics

ROUNDS = 5


def peer(i: int) -> dict[str, object]:
    return {"peer_id": f"12D3KooW{i:044d}", "name": f"host-{i}", "ipv4": "100.64.0.1", "ipv6": "fd00::1",
            "state": "up", "path": "direct", "data_path": "udp", "rtt_ms": 1.2, "bytes_in": 10**9,
            "bytes_out": 10**9, "packets_in": 10**6, "packets_out": 10**6, "drops": {"queue_full": 3, "no_route": 1},
            "path_changes": 0, "queued": 0, "learned_from": "discovery"}


def main() -> None:
    limits = {f"limit{i}": {"hits": 1, "in_use": 1, "limit": 2} for i in range(20)}
    for count in (10, 100, 1000):
        snapshot = {"peer_id": "x", "network": "n", "peers": [peer(i) for i in range(count)], "limits": limits}
        metrics.render_snapshot(snapshot)  # warm up
        started = time.perf_counter()
        for _ in range(ROUNDS):
            body = metrics.render_snapshot(snapshot)
        per = (time.perf_counter() - started) / ROUNDS
        print(f"{count:5d} peers: {per * 1000:7.1f} ms per page, {len(body):8d} bytes")


if __name__ == "__main__":
    main()
