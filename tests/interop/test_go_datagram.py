"""The datagram path (capability ``udp/1``, docs/protocol.md §16) in the Go interop peer.

Two Go peers on loopback first (the Go side against itself), then a Go peer and
a Python node in namespaces::

    gov (go-peer vpn)            py (p2pvpn up, TUN)
    eth0 198.18.7.1              eth0 198.18.7.2
         └───── switch lan (br0) ─────┘

Traffic crosses the datagram path in both directions: the Python node's kernel
pings the Go peer and sends a UDP transfer to its echo port; the Go peer
(``--traffic-to``) pings the Python node's kernel and sends a transfer to a
UDP echo server in the Python namespace. Hashes of what was sent and what came
back must match, and both sides must report the path as ``udp`` with their
datagram counters moving, so the packets did not take the stream.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gopeer import LOOPBACK_LISTEN, GoPeer

GO_FLAGS = ("--dht", "off", "--keepalive", "1s", *(f"--listen={a}" for a in LOOPBACK_LISTEN))


def _tunnel_stats(stats: dict, peer_id: str) -> dict:
    tunnels = stats.get("tunnels") or {}
    assert peer_id in tunnels, stats
    return tunnels[peer_id]


async def test_two_go_peers_carry_traffic_over_the_datagram_path_and_rekey(go_peer_bin: Path) -> None:
    with GoPeer(go_peer_bin, "vpn", *GO_FLAGS) as b:
        rb = await b.aready()
        assert rb["udp_port"] > 0
        with GoPeer(go_peer_bin, "vpn", *GO_FLAGS, "--peer", b.addr(), "--rekey-after", "2s",
                    "--traffic-to", rb["ipv4"], "--traffic-bytes", str(512 * 1024)) as a:
            ra = await a.aready()
            up_a = await a.await_event("path", lambda e: e["peer"] == rb["peer_id"] and e["path"] == "udp")
            up_b = await b.await_event("path", lambda e: e["peer"] == ra["peer_id"] and e["path"] == "udp")
            assert up_a["udp_endpoint"] == f"127.0.0.1:{rb['udp_port']}"
            assert up_b["udp_endpoint"] == f"127.0.0.1:{ra['udp_port']}"

            done = await a.await_event("traffic_done", timeout=60)
            assert "error" not in done, done
            assert done["path_at_start"] == done["path_at_end"] == "udp", done
            assert done["pings_answered"] == done["pings_sent"] == 5, done
            assert done["chunks_echoed"] == done["chunks"] and done["sent_sha256"] == done["echo_sha256"], done

            # The initiator (a) rekeys every 2 s; b answers; the path stays up across epochs.
            await a.await_event("datagram_keys", lambda e: e["epoch"] >= 3, timeout=20)
            await b.await_event("datagram_keys", lambda e: e["epoch"] >= 3, timeout=20)
            sa, sb = await a.stats(), await b.stats()
            ta, tb = _tunnel_stats(sa, rb["peer_id"]), _tunnel_stats(sb, ra["peer_id"])
            assert ta["path"] == tb["path"] == "udp", (ta, tb)
            assert ta["epoch"] >= 3 and tb["epoch"] >= 3, (ta, tb)
            chunks = done["chunks"] + done["pings_sent"]
            assert ta["udp_tx_packets"] >= chunks and tb["udp_rx_packets"] >= chunks, (ta, tb)
            assert tb["udp_tx_packets"] >= chunks and ta["udp_rx_packets"] >= chunks, (ta, tb)
            # Every packet b delivered came over UDP (the traffic started once the path was udp).
            cb = sb["counters"]
            assert cb["packets_in"] == cb["udp_packets_in"], cb
            for drop in ("udp_bad_auth", "udp_replayed", "udp_short", "protocol_errors"):
                assert drop not in cb and drop not in sa["counters"], (sa, sb)


async def test_a_go_peer_without_udp_keeps_the_stream(go_peer_bin: Path) -> None:
    """``--udp=false``: no udp/1 in its Hello, so neither side offers; traffic takes the stream."""
    with GoPeer(go_peer_bin, "vpn", *GO_FLAGS, "--udp=false") as b:
        rb = await b.aready()
        assert "udp_port" not in rb
        with GoPeer(go_peer_bin, "vpn", *GO_FLAGS, "--peer", b.addr(), "--traffic-to", rb["ipv6"],
                    "--traffic-path", "any", "--traffic-bytes", str(64 * 1024)) as a:
            ra = await a.aready()
            up = await a.await_event("tunnel_up", lambda e: e["peer"] == rb["peer_id"])
            assert "udp/1" not in up["remote_capabilities"]
            done = await a.await_event("traffic_done", timeout=60)
            assert "error" not in done and done["sent_sha256"] == done["echo_sha256"], done
            assert done["pings_answered"] == 5, done
            sa = await a.stats()
            assert _tunnel_stats(sa, rb["peer_id"])["path"] == "stream"
            assert a.find("datagram_keys") is None and a.find("path") is None
            assert "udp_packets_in" not in sa["counters"], sa
            assert b.find("protocol_error") is None and ra["udp_port"] > 0
