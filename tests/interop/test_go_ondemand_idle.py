"""Idle on-demand tunnels across implementations (docs/protocol.md §18.4): the Go peer as the opener.

On loopback with an in-memory TUN for the Python member: the Go vpn peer
(``--on-demand --idle-timeout 2s``) finds the member by its address record on
its first packet and opens a tunnel (§18.3); when the tunnel has carried no IP
packet for the timeout (keepalives and datagram-path probes go on; they are
no traffic) Go sends Close(IDLE) and both sides drop the tunnel; neither
redials by itself; Go's next packet opens it again, with the record it
already holds (§18.2, §18.3 step 5). And the other way: a tunnel the Python
member opened is closed by the member (Close(IDLE) received by Go), never by
Go, even with a shorter timeout of its own.
"""

from __future__ import annotations

import ipaddress
import signal
import time
from pathlib import Path

import trio
from gopeer import LOOPBACK_LISTEN, GoPeer, icmp4_echo, parse_reply
from libp2p.peer.id import ID
from test_go_address_records import ON_DEMAND, echo_reply4

from p2pvpn.discovery.address import address_key
from p2pvpn.testing.cluster import Cluster, running
from p2pvpn.testing.memtun import MemoryTun

IDLE = 2.0  # Go's --idle-timeout; Go checks every IDLE / 4


async def answer_pings(tun: MemoryTun, go_ipv4: str, count: int) -> float:
    """Answer ``count`` echo requests from Go on the member's TUN; returns when the last answer went in."""
    for _ in range(count):
        with trio.fail_after(15):
            request = await tun.delivered.receive()
        assert (str(ipaddress.IPv4Address(request[12:16])), request[20]) == (go_ipv4, 8), request.hex()
        tun.inject(echo_reply4(request))
    return time.monotonic()


async def test_go_closes_an_idle_on_demand_tunnel_and_reopens_it_on_the_next_packet(
    go_dht: GoPeer, go_peer_bin: Path, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path)
    first = cluster.node("py")  # its key, for --allow
    with GoPeer(go_peer_bin, "vpn", "--bootstrap", go_dht.addr(), "--keepalive", "0.5s", "--record-ttl", "30s",
                "--on-demand", "--idle-timeout", f"{IDLE:g}s", "--allow", str(first.peer_id),
                "--traffic-to", str(first.addresses.ipv4), "--traffic-path", "any", "--traffic-pings", "3",
                "--traffic-bytes", "0", "--traffic-on-usr2", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
        ready = await go.aready()
        assert ready["idle_timeout"] == IDLE, ready
        go_id = ID.from_base58(go.peer_id)
        # The member's own idle timeout is long: whatever closes below, Go closed it (only the opener does).
        py = cluster.node("py", allow_peers=(go.peer_id,), bootstrap=[go_dht.addr()], dht="client", **ON_DEMAND)
        async with running(py):
            assert py.manager is not None
            key = address_key("default", py.addresses.ipv4)
            await go_dht.await_event("record_validated", lambda e: e["key"] == key and e["ok"], timeout=30)
            tun = cluster.tuns["py"]

            # 1. First packet: lookup, dial, traffic.
            go.proc.send_signal(signal.SIGUSR2)
            resolved = await go.await_event("demand_resolved", timeout=30)
            assert resolved["peer"] == str(py.peer_id) and resolved["held"] is False, resolved
            up = await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id))
            assert up["initiator"] is True, up
            last_traffic = await answer_pings(tun, ready["ipv4"], 3)
            done = await go.await_event("traffic_done", timeout=30)
            assert done["looked_up"] is True and done["pings_answered"] == 3, done

            # 2. No traffic for IDLE seconds: Go sends Close(IDLE); the member drops its side.
            closed = await go.await_event("idle_close", lambda e: e["peer"] == str(py.peer_id), timeout=IDLE + 15)
            waited = time.monotonic() - last_traffic
            assert waited >= IDLE - 0.1, f"closed {waited:.2f} s after the last packet, before the {IDLE} s timeout"
            assert closed["traffic"] >= 6, closed  # 3 requests out, 3 replies in
            down = await go.await_event("tunnel_down", lambda e: e["peer"] == str(py.peer_id), timeout=10)
            assert down.get("sent_close") == "IDLE" and "received_close" not in down, down
            with trio.fail_after(10):
                while (peer := py.manager.peers.get(go_id)) is not None and peer.tunnel is not None:
                    await trio.sleep(0.05)
            print(f"idle close {waited:.2f} s after the last packet (timeout {IDLE} s)")

            # 3. Neither side redials by itself (§18.4).
            mark = go.mark()
            await trio.sleep(2 * IDLE)
            assert go.find("tunnel_up", start=mark) is None, go.describe()
            assert (peer := py.manager.peers.get(go_id)) is None or peer.tunnel is None

            # 4. The next packet opens it again, with the record Go holds: no lookup in the DHT this time.
            go.proc.send_signal(signal.SIGUSR2)
            again = await go.await_event("demand_resolved", start=mark, timeout=30)
            assert again["peer"] == str(py.peer_id) and again["held"] is True, again
            up = await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id), start=mark)
            assert up["initiator"] is True, up
            await answer_pings(tun, ready["ipv4"], 3)
            done = await go.await_event("traffic_done", start=mark, timeout=30)
            assert done["pings_answered"] == 3, done
            peer = py.manager.peers.get(go_id)
            assert peer is not None and peer.tunnel is not None
            stats = await go.stats()
            assert stats["counters"]["idle_closed"] == 1, stats


async def test_python_closes_the_tunnel_it_opened_and_go_with_a_shorter_timeout_leaves_it(
    go_dht: GoPeer, go_peer_bin: Path, tmp_path: Path
) -> None:
    """The other direction: the Python member opens; only it closes (§18.4), even if Go's timeout is shorter."""
    with GoPeer(go_peer_bin, "vpn", "--bootstrap", go_dht.addr(), "--keepalive", "0.5s", "--record-ttl", "30s",
                "--on-demand", "--idle-timeout", "1s", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
        ready = await go.aready()
        key = address_key("default", ipaddress.ip_address(ready["ipv4"]))
        await go_dht.await_event("record_validated", lambda e: e["key"] == key and e["ok"], timeout=30)
        cluster = Cluster(tmp_path)
        settings = {**ON_DEMAND, "idle_timeout": 2 * IDLE}
        py = cluster.node("py", allow_peers=(go.peer_id,), bootstrap=[go_dht.addr()], dht="client", **settings)
        async with running(py):
            assert py.manager is not None and py.manager.demand is not None
            tun, me4, go_id = cluster.tuns["py"], str(py.addresses.ipv4), ID.from_base58(go.peer_id)
            tun.inject(icmp4_echo(me4, ready["ipv4"], ident=0x1D, seq=1))
            with trio.fail_after(20):
                assert parse_reply(await tun.delivered.receive())["seq"] == 1
            last_traffic = time.monotonic()
            up = await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id))
            assert up["initiator"] is False, up
            received = await go.await_event("close_received", lambda e: e["peer"] == str(py.peer_id),
                                            timeout=2 * IDLE + 15)
            waited = time.monotonic() - last_traffic
            assert received["code"] == "IDLE", received
            assert waited >= 2 * IDLE - 0.1, f"{waited:.2f} s"
            assert go.find("idle_close") is None, go.describe()  # Go's 1 s timeout is not for this tunnel
            with trio.fail_after(10):
                while (peer := py.manager.peers.get(go_id)) is not None and peer.tunnel is not None:
                    await trio.sleep(0.05)
            assert py.manager.demand.idle.closed == 1
            mark = go.mark()
            await trio.sleep(2.0)
            assert go.find("tunnel_up", start=mark) is None, go.describe()  # nobody redials by itself
            tun.inject(icmp4_echo(me4, ready["ipv4"], ident=0x1D, seq=2))  # the side that sees traffic reopens
            with trio.fail_after(20):
                assert parse_reply(await tun.delivered.receive())["seq"] == 2
            await go.await_event("tunnel_up", lambda e: e["peer"] == str(py.peer_id), start=mark)
