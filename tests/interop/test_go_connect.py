"""Python and go-libp2p connect over TCP (noise + yamux) and QUIC v1, each side dialling.

Go -> Python: ``go-peer probe`` dials a p2pvpn node and reports what it
negotiated and which of our protocols it could open a stream for.
Python -> Go: p2pvpn's Host dials the Go vpn peer and opens a tunnel stream;
the Go peer reports the inbound connection, and its Hello decodes with
p2pvpn's codec and carries the addresses derived from its peer ID.
All on loopback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import multiaddr
import pytest
import trio
from gopeer import LOOPBACK_LISTEN, GoPeer
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.host import Host, describe_path
from p2pvpn.testing.cluster import Cluster, running
from p2pvpn.wire import codec

TUNNEL = "/p2pvpn/tunnel/1.0.0"
KAD = "/p2pvpn/kad/1.0.0"
TRANSPORTS = [pytest.param(False, id="tcp"), pytest.param(True, id="quic-v1")]


def probe(binary: Path, addr: str, *protocols: str) -> dict:
    args = [str(binary), "probe", "--addr", addr, "--timeout", "15s"]
    for p in protocols:
        args += ["--protocol", p]
    result = subprocess.run(args, capture_output=True, text=True, timeout=40, check=False)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    found = next((e for e in events if e["event"] == "probe"), None)
    assert found is not None, f"probe printed no result: {result.stdout} {result.stderr[-2000:]}"
    return found


@pytest.mark.parametrize("quic", TRANSPORTS)
async def test_go_probe_dials_a_python_node(go_peer_bin: Path, tmp_path: Path, quic: bool) -> None:
    cluster = Cluster(tmp_path)
    node = cluster.node("py", quic=quic)
    async with running(node):
        protocols = (TUNNEL, KAD)
        result = await trio.to_thread.run_sync(probe, go_peer_bin, cluster.addr("py", quic=quic), *protocols)
    assert result["ok"], result
    assert result["peer"] == str(node.peer_id) and result["agent"].startswith("py-libp2p")
    if quic:
        assert result["transport"] == "quic-v1"
    else:
        assert (result["transport"], result["security"], result["muxer"]) == ("tcp", "/noise", "/yamux/1.0.0")
    assert TUNNEL in result["protocols"]
    assert all(result["streams"][p]["negotiated"] == p for p in protocols)


@pytest.mark.parametrize("quic", TRANSPORTS)
async def test_python_dials_the_go_peer_and_reads_its_hello(go_peer_bin: Path, quic: bool) -> None:
    listen = "/ip4/127.0.0.1/udp/0/quic-v1" if quic else "/ip4/127.0.0.1/tcp/0"
    with GoPeer(go_peer_bin, "vpn", "--dht", "off", *(f"--listen={a}" for a in LOOPBACK_LISTEN)) as go:
        ready = await go.aready()
        go_id = ID.from_base58(ready["peer_id"])
        target = multiaddr.Multiaddr(go.addr("quic-v1" if quic else "tcp")).decapsulate(
            multiaddr.Multiaddr(f"/p2p/{go_id}"))
        host = Host(create_new_key_pair(), [listen])
        async with host.running():
            stream = await host.open_stream(go_id, [target], TUNNEL)
            path = describe_path(stream)
            decoder = codec.FrameDecoder()
            hello = None
            with trio.fail_after(10):
                while hello is None:
                    decoder.feed(await stream.read(4096))
                    hello = decoder.next_frame()
            await stream.reset()
        inbound = await go.await_event("connected", lambda e: e["peer"] == str(host.peer_id))
    assert path["transport"] == ("quic" if quic else "tcp")
    assert inbound["direction"] == "Inbound"
    if quic:
        assert inbound["transport"] == "quic-v1"
    else:
        assert (inbound["transport"], inbound["security"], inbound["muxer"]) == ("tcp", "/noise", "/yamux/1.0.0")
    expected = addressing.derive(go_id.to_bytes(), "default")
    assert isinstance(hello, codec.Hello)
    assert (hello.version, hello.network, hello.ipv4, hello.ipv6, hello.address_index) == (
        1, "default", expected.ipv4, expected.ipv6, 0)
    assert str(hello.ipv4) == ready["ipv4"] and str(hello.ipv6) == ready["ipv6"]
