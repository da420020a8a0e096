"""The datagram path (capability ``udp/1``, docs/protocol.md §16) in the Go interop peer.

Two Go peers on loopback first (the Go side against itself: rekeys under load,
junk counted, no ``udp/1`` = stream, IPv6 underlay), the Go and Python offer
decoders case by case, then a Go peer and a Python node in namespaces::

    gov (go-peer vpn)            py (p2pvpn up, TUN)
    eth0 198.18.7.1              eth0 198.18.7.2
         └───── switch lan (br0) ─────┘

Traffic crosses the datagram path in both directions: the Python node's kernel
pings the Go peer and sends a UDP transfer to its echo port; the Go peer
(``--traffic-to``) pings the Python node's kernel and sends a transfer to a
UDP echo server in the Python namespace. Hashes of what was sent and what came
back must match, and both sides must report the path as ``udp`` with their
datagram counters moving, so the packets did not take the stream. Last, two Go
peers in namespaces fall back to the stream when nft drops UDP, and return.
Every process and namespace is stopped and deleted by the test (underlay
198.18.0.0/15, overlay 100.64.0.0/10 and fd00::/8, or loopback).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gopeer import LOOPBACK_LISTEN, GoPeer

from p2pvpn.config import Config
from p2pvpn.control import client
from p2pvpn.errors import ControlError
from p2pvpn.lab.topology import Host, Topology
from p2pvpn.node import find_control_path
from p2pvpn.testing.frames import datagram_offer_frame

GO_FLAGS = ("--dht", "off", "--keepalive", "1s", *(f"--listen={a}" for a in LOOPBACK_LISTEN))
PORT = 4001
SUBNET = "198.18.7.0/24"
PY_ECHO_PORT = 7007
TRANSFER_BYTES = 1 << 20

# Run with ``python -c`` inside the Python node's namespace: a UDP echo server for the Go peer's
# transfer (bounded: it exits after argv[2] seconds).
UDP_ECHO_SERVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.5)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(65535)
    except TimeoutError:
        continue
    s.sendto(data, peer)
"""

# A UDP transfer to an echo server (the Go peer's port 7), chunk = 8-byte sequence number + data,
# each chunk resent until echoed; prints the SHA-256 of what was sent and of what came back.
UDP_TRANSFER = """
import hashlib, json, os, socket, sys, time
dst, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(total)
chunks = [data[i:i + 1200] for i in range(0, total, 1200)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.05)
echoed, sent_at, retransmits, nxt = {}, {}, 0, 0
end = time.monotonic() + 60
while len(echoed) < len(chunks) and time.monotonic() < end:
    now = time.monotonic()
    waiting = [i for i in range(nxt) if i not in echoed]
    for i in waiting:
        if now - sent_at[i] > 0.4:
            retransmits += 1
            sent_at[i] = now
            s.sendto(i.to_bytes(8, "big") + chunks[i], (dst, port))
    while nxt < len(chunks) and len(waiting) < 32:
        sent_at[nxt] = now
        s.sendto(nxt.to_bytes(8, "big") + chunks[nxt], (dst, port))
        waiting.append(nxt)
        nxt += 1
    try:
        while True:
            reply = s.recv(65535)
            echoed.setdefault(int.from_bytes(reply[:8], "big"), reply[8:])
    except TimeoutError:
        pass
back = b"".join(echoed.get(i, b"") for i in range(len(chunks)))
print(json.dumps({"chunks": len(chunks), "echoed": len(echoed), "retransmits": retransmits,
                  "sent_sha256": hashlib.sha256(data).hexdigest(), "echo_sha256": hashlib.sha256(back).hexdigest()}))
"""


def _tunnel_stats(stats: dict, peer_id: str) -> dict:
    tunnels = stats.get("tunnels") or {}
    assert peer_id in tunnels, stats
    return tunnels[peer_id]


async def test_two_go_peers_carry_traffic_over_the_datagram_path_and_rekey(go_peer_bin: Path) -> None:
    with GoPeer(go_peer_bin, "vpn", *GO_FLAGS) as b:
        rb = await b.aready()
        assert rb["udp_port"] > 0
        # A rekey every 0.5 s during a 4 MiB transfer: a rekey must lose nothing (no udp_unknown_index).
        with GoPeer(go_peer_bin, "vpn", *GO_FLAGS, "--peer", b.addr(), "--rekey-after", "500ms",
                    "--traffic-to", rb["ipv4"], "--traffic-bytes", str(4 << 20)) as a:
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

            # The initiator (a) rekeys every 0.5 s; b answers; the path stays up across epochs.
            await a.await_event("datagram_keys", lambda e: e["epoch"] >= 3, timeout=20)
            await b.await_event("datagram_keys", lambda e: e["epoch"] >= 3, timeout=20)
            sa, sb = await a.stats(), await b.stats()
            ta, tb = _tunnel_stats(sa, rb["peer_id"]), _tunnel_stats(sb, ra["peer_id"])
            assert ta["path"] == tb["path"] == "udp", (ta, tb)
            assert ta["epoch"] >= 3 and tb["epoch"] >= 3, (ta, tb)
            # Only the current and the previous epoch are held (+ an offer in flight), however fast the rekeys.
            assert sa["udp_indexes"] <= 3 and sb["udp_indexes"] <= 3, (sa, sb)
            chunks = done["chunks"] + done["pings_sent"]
            assert ta["udp_tx_packets"] >= chunks and tb["udp_rx_packets"] >= chunks, (ta, tb)
            assert tb["udp_tx_packets"] >= chunks and ta["udp_rx_packets"] >= chunks, (ta, tb)
            # Every packet b delivered came over UDP (the traffic started once the path was udp).
            cb = sb["counters"]
            assert cb["packets_in"] == cb["udp_packets_in"], cb
            for drop in ("udp_bad_auth", "udp_replayed", "udp_short", "udp_malformed", "udp_unknown_index",
                         "protocol_errors"):
                assert drop not in cb and drop not in sa["counters"], (sa, sb)

            # Junk at b's UDP port is dropped silently and counted (§16.6): no reply, path unchanged.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
                junk.settimeout(0.5)
                junk.sendto(b"\x01short", ("127.0.0.1", rb["udp_port"]))
                junk.sendto(b"\x01\xde\xad\xbe\xef" + bytes(8) + bytes(40), ("127.0.0.1", rb["udp_port"]))
                junk.sendto(b"\x07" + bytes(40), ("127.0.0.1", rb["udp_port"]))
                with pytest.raises(TimeoutError):
                    junk.recv(100)
            cb = (await b.stats())["counters"]
            assert (cb.get("udp_short"), cb.get("udp_unknown_index")) == (2, 1), cb


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


async def test_two_go_peers_use_the_datagram_path_over_an_ipv6_underlay(go_peer_bin: Path) -> None:
    """The connection is over ::1: the candidate endpoint is [::1]:port, the traffic (to the overlay IPv6) goes
    over UDP/IPv6."""
    v6 = ("--dht", "off", "--keepalive", "1s", "--listen", "/ip6/::1/tcp/0")
    with GoPeer(go_peer_bin, "vpn", *v6) as b:
        rb = await b.aready()
        with GoPeer(go_peer_bin, "vpn", *v6, "--peer", b.addr(), "--traffic-to", rb["ipv6"]) as a:
            await a.aready()
            up = await a.await_event("path", lambda e: e["path"] == "udp")
            assert up["udp_endpoint"] == f"[::1]:{rb['udp_port']}", up
            done = await a.await_event("traffic_done", timeout=60)
            assert "error" not in done and done["sent_sha256"] == done["echo_sha256"], done
            assert done["pings_answered"] == 5 and done["path_at_end"] == "udp", done
            counters = (await b.stats())["counters"]
            assert counters["udp_packets_in"] == counters["packets_in"] and counters["echo_icmp6"] == 5, counters


def _uint64_epoch_frame(epoch: int) -> bytes:
    """An offer whose epoch varint does not fit uint32 (a protobuf runtime keeps its low 32 bits)."""
    key = bytes(range(32))
    body = b"\x08" + _varint(epoch) + b"\x12\x20" + key + b"\x18\x07\x20\xa1\x1f"
    inner = b"\x2a" + _varint(len(body)) + body
    return _varint(len(inner)) + inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_go_and_python_decode_the_same_datagram_offers(go_peer_bin: Path) -> None:
    """§16.2's limits, cross-checked: each frame is accepted by both decoders with the same fields, or
    refused by both as a protocol error."""
    from gopeer import run_tool

    from p2pvpn.wire.codec import DatagramOffer, FrameDecoder, ProtocolError

    key = bytes(range(32))
    ok = dict(epoch=1, public_key=key, receiver_index=7, port=4001)
    cases = [
        datagram_offer_frame(**ok),
        datagram_offer_frame(**{**ok, "epoch": 2**32 - 1, "receiver_index": 2**32 - 1, "port": 65535}),
        datagram_offer_frame(**ok, endpoints=[bytes([198, 18, 0, 1, 0x0F, 0xA1]), bytes(16) + b"\x00\x01"] * 4),
        datagram_offer_frame(**{**ok, "epoch": 0}),
        datagram_offer_frame(**{**ok, "public_key": key[:31]}),
        datagram_offer_frame(**{**ok, "public_key": key + b"\x00"}),
        datagram_offer_frame(**{**ok, "public_key": b""}),
        datagram_offer_frame(**{**ok, "receiver_index": 0}),
        datagram_offer_frame(**{**ok, "port": 0}),
        datagram_offer_frame(**{**ok, "port": 65536}),
        datagram_offer_frame(**ok, endpoints=[bytes(6)] * 9),
        datagram_offer_frame(**ok, endpoints=[bytes(7)]),
        datagram_offer_frame(**ok, endpoints=[b""]),
        datagram_offer_frame(),
        _uint64_epoch_frame(2**32 + 1),  # epoch 1 after truncation to uint32
        _uint64_epoch_frame(2**32),  # epoch 0 after truncation
    ]
    go = run_tool(go_peer_bin, ["frame", "decode"], [{"hex": c.hex()} for c in cases])
    for wire, verdict in zip(cases, go, strict=True):
        decoder = FrameDecoder()
        decoder.feed(wire)
        try:
            frame = decoder.next_frame()
        except ProtocolError:
            assert not verdict["ok"] and "incomplete" not in verdict, (wire.hex(), verdict)
            continue
        assert isinstance(frame, DatagramOffer) and verdict["ok"], (wire.hex(), frame, verdict)
        [got] = verdict["frames"]
        assert (got["epoch"], bytes.fromhex(got["public_key"]), got["receiver_index"], got["port"]) == (
            frame.epoch, frame.public_key, frame.receiver_index, frame.port), (got, frame)
        assert len(got["endpoints"] or []) == len(frame.endpoints), (got, frame)


# -- Go <-> Python, in namespaces -----------------------------------------------------------------


def _py_status(control: Path) -> dict:
    return client.request(control, "status", timeout=3)


def _wait_py_peer(control: Path, peer_id: str, proc: subprocess.Popen[bytes], want_path: str,
                  timeout: float = 60.0) -> dict:
    """The Python node's status entry for the Go peer, once its tunnel is up on ``want_path``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = _py_status(control)
            last = next((p for p in status["peers"] if p["peer_id"] == peer_id), status)
            # "data_path" (§16.9): "path" already says whether the libp2p connection is direct or relayed.
            if isinstance(last, dict) and last.get("state") == "up" and last.get("data_path") == want_path:
                return last
        except (ControlError, OSError, ValueError, KeyError) as exc:  # not listening yet: retry until the deadline
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"no tunnel to the Go peer on path {want_path!r} within {timeout:g} s; last: {last}")


def _transfer_to_go(host: Host, go_ipv4: str) -> dict:
    out = host.run(sys.executable, "-c", UDP_TRANSFER, go_ipv4, "7", str(TRANSFER_BYTES), timeout=90)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.netns
@pytest.mark.parametrize("dialer", ["go", "python"])
def test_go_and_python_exchange_traffic_over_the_datagram_path(go_peer_bin: Path, tmp_path: Path,
                                                                dialer: str) -> None:
    """Both directions over UDP; with ``dialer=go`` the Go peer is the stream's initiator and rekeys
    every 3 s (the Python node answers), with ``python`` the Go peer is the responder."""
    with Topology() as topo:
        lan = topo.add_switch("lan", SUBNET)
        hosts = {name: topo.add_host(name) for name in ("gov", "py")}
        ips = {name: topo.attach(host, lan) for name, host in hosts.items()}
        node_dir = tmp_path / "py"
        subprocess.run([sys.executable, "-m", "p2pvpn", "init", "--dir", str(node_dir)], check=True,
                       capture_output=True, timeout=30)
        me = json.loads(subprocess.run([sys.executable, "-m", "p2pvpn", "id", "--dir", str(node_dir), "--json"],
                                       check=True, capture_output=True, text=True, timeout=30).stdout)
        py_addr = f"/ip4/{ips['py']}/tcp/{PORT}/p2p/{me['peer_id']}"
        go_args = ["--listen", f"/ip4/{ips['gov']}/tcp/{PORT}", "--dht", "off", "--keepalive", "1s",
                   "--traffic-to", me["ipv4"], "--traffic-port", str(PY_ECHO_PORT),
                   "--traffic-bytes", str(TRANSFER_BYTES)]
        if dialer == "go":
            go_args += ["--peer", py_addr, "--rekey-after", "3s"]
        gov = GoPeer(go_peer_bin, "vpn", *go_args, netns=hosts["gov"])
        log = (tmp_path / "py.log").open("wb")
        try:
            go = gov.ready()
            assert go["udp_port"] == PORT  # the TCP listen port, free on UDP (§16.8)
            py_args = ["--listen", f"/ip4/{ips['py']}/tcp/{PORT}", "--dht", "off", "--keepalive", "1"]
            py_args += (["--allow-peer", go["peer_id"]] if dialer == "go"
                        else ["--peer", f"/ip4/{ips['gov']}/tcp/{PORT}/p2p/{go['peer_id']}"])
            hosts["py"].popen(sys.executable, "-c", UDP_ECHO_SERVER, str(PY_ECHO_PORT), "120",
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            proc = hosts["py"].popen(sys.executable, "-m", "p2pvpn", "up", "--dir", str(node_dir), *py_args,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            control = find_control_path(Config(), node_dir)

            # 1. Both sides see the path go to udp, each with the other's UDP endpoint.
            peer = _wait_py_peer(control, go["peer_id"], proc, "udp")
            assert peer["udp_endpoint"] == f"{ips['gov']}:{PORT}", peer
            up = gov.wait_for("path", lambda e: e["peer"] == me["peer_id"] and e["path"] == "udp", timeout=30)
            assert up["udp_endpoint"] == f"{ips['py']}:{PORT}", up

            # 2. Python -> Go: the kernel's ping through the TUN, and a transfer echoed by the Go peer.
            for family, dest in (("-4", go["ipv4"]), ("-6", go["ipv6"])):
                ping = hosts["py"].run("ping", family, "-c", "5", "-i", "0.2", "-W", "2", dest, check=False,
                                       timeout=30)
                assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
            to_go = _transfer_to_go(hosts["py"], go["ipv4"])
            assert to_go["echoed"] == to_go["chunks"] and to_go["sent_sha256"] == to_go["echo_sha256"], to_go

            # 3. Go -> Python: the Go peer's own pings (answered by the kernel) and its transfer.
            done = gov.wait_for("traffic_done", timeout=90)
            assert "error" not in done, done
            assert done["pings_answered"] == done["pings_sent"] == 5, done
            assert done["chunks_echoed"] == done["chunks"] and done["sent_sha256"] == done["echo_sha256"], done
            assert done["path_at_start"] == "udp", done

            # 4. The packets took UDP: both sides' datagram counters cover the traffic, nothing dropped.
            chunks = to_go["chunks"] + done["chunks"]
            peer = _wait_py_peer(control, go["peer_id"], proc, "udp")
            assert peer["udp_tx_packets"] >= chunks and peer["udp_rx_packets"] >= chunks, peer
            udp = _py_status(control)["udp"]  # node-wide: nothing the Go peer sent was dropped
            assert udp["port"] == PORT, udp
            for drop in ("udp_bad_auth", "udp_replayed", "udp_unknown_index", "udp_short", "udp_malformed"):
                assert udp[drop] == 0, udp
            stats = gov.wait_for("stats", start=_signal_stats(gov))
            tunnel = stats["tunnels"][me["peer_id"]]
            assert tunnel["path"] == "udp" and tunnel["udp_endpoint"] == f"{ips['py']}:{PORT}", tunnel
            assert tunnel["udp_tx_packets"] >= chunks and tunnel["udp_rx_packets"] >= chunks, tunnel
            counters = stats["counters"]
            for drop in ("udp_bad_auth", "udp_replayed", "udp_short", "udp_malformed", "protocol_errors",
                         "spoofed_source"):
                assert drop not in counters, counters
            if dialer == "go":  # the Go initiator rekeyed every 3 s, the Python responder followed
                keys = gov.wait_for("datagram_keys", lambda e: e["epoch"] >= 3, timeout=20)
                assert keys["peer"] == me["peer_id"]
                peer = _wait_py_peer(control, go["peer_id"], proc, "udp")
                assert peer["udp_epoch"] >= 3, peer
                assert gov.find("protocol_error") is None and gov.find("tunnel_down") is None
        except BaseException:
            print((tmp_path / "py.log").read_text(errors="replace")[-4000:])
            print(gov.describe())
            raise
        finally:
            gov.stop()
            log.close()


def _signal_stats(go: GoPeer) -> int:
    """Ask a Go peer for its stats from sync code; the index to wait for the answer from."""
    start = go.mark()
    os.kill(go.proc.pid, signal.SIGUSR1)
    return start


@pytest.mark.netns
def test_two_go_peers_fall_back_to_the_stream_when_udp_is_blocked_and_return(go_peer_bin: Path) -> None:
    """An nft rule drops UDP to b: both sides go back to the stream within PATH_TIMEOUT (6 s) and the
    traffic still gets through; the rule goes: probing finds the path again. Each traffic round is
    started by SIGUSR2 (``--traffic-on-usr2``), so the test chooses when it runs."""
    with Topology() as topo:
        lan = topo.add_switch("lan", SUBNET)
        hosts = {name: topo.add_host(name) for name in ("a", "b")}
        ips = {name: topo.attach(host, lan) for name, host in hosts.items()}
        b = GoPeer(go_peer_bin, "vpn", "--listen", f"/ip4/{ips['b']}/tcp/{PORT}", "--dht", "off", "--keepalive", "1s",
                   netns=hosts["b"])
        a = None
        try:
            rb = b.ready()
            a = GoPeer(go_peer_bin, "vpn", "--listen", f"/ip4/{ips['a']}/tcp/{PORT}", "--dht", "off",
                       "--keepalive", "1s", "--peer", f"/ip4/{ips['b']}/tcp/{PORT}/p2p/{rb['peer_id']}",
                       "--traffic-to", rb["ipv4"], "--traffic-path", "any", "--traffic-on-usr2",
                       "--traffic-bytes", str(256 * 1024), netns=hosts["a"])
            ra = a.ready()

            def path(go: GoPeer, other: str, state: str, start: int, timeout: float = 20) -> dict:
                return go.wait_for("path", lambda e: e["peer"] == other and e["path"] == state, timeout=timeout,
                                   start=start)

            def traffic_round() -> dict:
                start = a.mark()
                os.kill(a.proc.pid, signal.SIGUSR2)
                done = a.wait_for("traffic_done", timeout=90, start=start)
                assert "error" not in done and done["sent_sha256"] == done["echo_sha256"], done
                assert done["pings_answered"] == done["pings_sent"], done
                return done

            path(a, rb["peer_id"], "udp", 0)
            path(b, ra["peer_id"], "udp", 0)
            assert traffic_round()["path_at_end"] == "udp"

            marks = a.mark(), b.mark()
            hosts["b"].run("nft", "-f", "-", input=(
                "table inet go_dgram_block {\n"
                "  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n"
                f"    udp dport {rb['udp_port']} drop\n"
                "  }\n"
                "}\n"))
            blocked_at = time.monotonic()
            path(a, rb["peer_id"], "stream", marks[0])
            path(b, ra["peer_id"], "stream", marks[1])
            assert time.monotonic() - blocked_at < 12  # PATH_TIMEOUT is 6 s
            before = (b.wait_for("stats", start=_signal_stats(b)))["counters"]
            done = traffic_round()
            assert done["path_at_start"] == done["path_at_end"] == "stream", done
            after = (b.wait_for("stats", start=_signal_stats(b)))["counters"]
            over_stream = (after["packets_in"] - before["packets_in"]) - (
                after.get("udp_packets_in", 0) - before.get("udp_packets_in", 0))
            assert over_stream >= done["chunks"], (before, after)

            marks = a.mark(), b.mark()
            hosts["b"].run("nft", "delete", "table", "inet", "go_dgram_block")
            path(a, rb["peer_id"], "udp", marks[0])
            path(b, ra["peer_id"], "udp", marks[1])
            assert traffic_round()["path_at_end"] == "udp"
            assert a.find("tunnel_down") is None and b.find("tunnel_down") is None  # one tunnel throughout
        except BaseException:
            print(b.describe())
            if a is not None:
                print(a.describe())
            raise
        finally:
            if a is not None:
                a.stop()
            b.stop()
