"""/metrics: the address rules, the HTTP answer, and a real node's page parsed with prometheus-client's parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pvpn import metrics
from p2pvpn.errors import ConfigError
from p2pvpn.testing.cluster import Cluster, free_port, running, wait_up
from p2pvpn.testing.packets import udp4


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)),
    ("[::1]:9100", ("::1", 9100)),
    ("127.0.0.53:1", ("127.0.0.53", 1)),
])
def test_loopback_addresses_are_accepted(text: str, expected: tuple[str, int]) -> None:
    assert metrics.parse_address(text) == expected


@pytest.mark.parametrize("text,words", [
    ("0.0.0.0:9469", "not a loopback address"),
    ("100.64.0.7:9469", "metrics_public"),
    ("127.0.0.1", "not ADDR:PORT"),
    ("localhost:9469", "not an IP address"),
    ("127.0.0.1:0", "within 1..65535"),
    ("127.0.0.1:http", "within 1..65535"),
    ("[::1]:70000", "within 1..65535"),
])
def test_bad_or_public_addresses_are_one_line_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        metrics.parse_address(text)
    assert "\n" not in str(info.value) and str(info.value).startswith("metrics: ")


def test_a_public_address_needs_the_explicit_switch() -> None:
    assert metrics.parse_address("0.0.0.0:9469", public=True) == ("0.0.0.0", 9469)


def test_http_answers_metrics_and_refuses_the_rest() -> None:
    assert metrics.classify(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == (200, False)
    assert metrics.classify(b"HEAD / HTTP/1.0\r\n\r\n") == (200, True)
    assert metrics.classify(b"GET /secret HTTP/1.1\r\n\r\n") == (404, False)
    assert metrics.classify(b"POST /metrics HTTP/1.1\r\n\r\n") == (405, False)
    assert metrics.classify(b"\x16\x03\x01garbage") == (400, False)
    body = metrics.render_snapshot({"peer_id": "12D3x", "network": "n", "peers": []})
    assert b'p2pvpn_node_info{ipv4="None",ipv6="None",network="n",peer_id="12D3x"} 1.0' in body
    head, sent = metrics.response(200, False, body).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK") and b"text/plain; version=0.0.4" in head and sent == body
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
    assert metrics.response(200, True, body).endswith(b"\r\n\r\n")
    assert metrics.response(404).startswith(b"HTTP/1.0 404 Not Found")


def test_peer_series_are_capped() -> None:
    peers = [{"peer_id": f"p{i}", "state": "up", "bytes_in": 1} for i in range(metrics.MAX_PEERS + 5)]
    families = {f.name: f for f in metrics.NodeCollector(lambda: {"peers": peers}).collect()}
    assert len({s.labels["peer"] for s in families["p2pvpn_peer_bytes"].samples}) == metrics.MAX_PEERS
    assert families["p2pvpn_metrics_peers_omitted"].samples[0].value == 5
    assert [s.value for s in families["p2pvpn_peers"].samples if s.labels["state"] == "up"] == [metrics.MAX_PEERS + 5]


async def _scrape(host: str, port: int, target: str = "/metrics") -> bytes:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


def _families(page: bytes) -> dict[str, list]:
    head, body = page.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200"), head
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def _value(samples: list, metric: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (metric, labels, samples)
    return float(found[0])


async def test_a_running_nodes_metrics_parse_and_follow_its_traffic(tmp_path: Path) -> None:
    """Two members of an owned network (names in certificates); a's /metrics parsed by prometheus-client."""
    cluster = Cluster(tmp_path)
    nid = cluster.owned("a", ["b"])
    port = free_port()
    a = cluster.node("a", network=nid, metrics=f"127.0.0.1:{port}")
    b = cluster.node("b", peers=[cluster.addr("a")], network=nid)
    async with running(a, b):
        await wait_up(a, b, 20)
        await wait_up(b, a, 20)
        assert a.metrics_bound == [("127.0.0.1", port)]
        for i in range(5):  # b -> a: five packets a counts in, one it drops (not for it)
            cluster.tuns["b"].inject(udp4(str(b.addresses.ipv4), str(a.addresses.ipv4), b"x" * (100 + i)))
        with trio.fail_after(10):
            for _ in range(5):
                await cluster.tuns["a"].delivered.receive()
        # wait until a's keepalive measured an RTT
        with trio.fail_after(10):
            while a.manager.peers[b.peer_id].tunnel.rtt is None:  # type: ignore[union-attr]
                await trio.sleep(0.1)
        fams = _families(await _scrape("127.0.0.1", port))

        bid = str(b.peer_id)
        peer = fams["p2pvpn_peer_bytes"]
        assert _value(fams["p2pvpn_peer_packets"], "p2pvpn_peer_packets_total", peer=bid, direction="in") == 5
        assert _value(peer, "p2pvpn_peer_bytes_total", peer=bid, direction="in") == sum(128 + i for i in range(5))
        assert _value(fams["p2pvpn_peer_state"], "p2pvpn_peer_state", peer=bid, state="up") == 1
        assert _value(fams["p2pvpn_peer_state"], "p2pvpn_peer_state", peer=bid, state="down") == 0
        assert _value(fams["p2pvpn_peer_info"], "p2pvpn_peer_info", peer=bid, name="b") == 1
        assert _value(fams["p2pvpn_peer_path"], "p2pvpn_peer_path", peer=bid, path="direct") == 1
        assert 0 < _value(fams["p2pvpn_peer_rtt_seconds"], "p2pvpn_peer_rtt_seconds", peer=bid) < 5
        assert _value(fams["p2pvpn_peers"], "p2pvpn_peers", state="up") == 1
        assert _value(fams["p2pvpn_node_info"], "p2pvpn_node_info", peer_id=str(a.peer_id)) == 1
        assert _value(fams["p2pvpn_dht_records"], "p2pvpn_dht_records", kind="members") >= 0
        assert _value(fams["p2pvpn_dht_server"], "p2pvpn_dht_server") == 1
        limits = {s.labels["limit"] for s in fams["p2pvpn_limit_hits"]}
        assert "conns" in limits or len(limits) >= 5, limits
        assert "p2pvpn_drops" in fams and "process_cpu_seconds" in fams

        # Drops by reason: a packet to an address a has no route for is dropped at a's egress and counted.
        cluster.tuns["a"].inject(udp4(str(a.addresses.ipv4), "100.64.255.254", b"nobody"))
        with trio.fail_after(10):
            while not a.manager.drops.get("no_route"):  # type: ignore[union-attr]
                await trio.sleep(0.05)
        fams = _families(await _scrape("127.0.0.1", port))
        assert _value(fams["p2pvpn_drops"], "p2pvpn_drops_total", reason="no_route") >= 1
        assert (await _scrape("127.0.0.1", port, "/other")).startswith(b"HTTP/1.0 404")


async def test_a_metrics_port_in_use_is_one_config_error_before_the_tun(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        node = cluster.node("a", dht="off", metrics=f"127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            await node.run()
    assert "a" not in cluster.tuns, "the TUN was created although the node could not start"
