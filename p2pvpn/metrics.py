"""Prometheus ``/metrics``: the node's own counters, read at scrape time, served on a local address.

Theory of operation: nothing here counts anything. The hot path keeps its
counters where it always did (``Peer.stats``, ``SessionManager.drops``,
the relay's and the exit's counters, the resource manager's gauges); a
scrape asks the node for the same snapshot ``p2pvpn status`` shows
(:meth:`p2pvpn.node.Node.status`, without its netlink dump) and
:class:`NodeCollector` turns it into metric families. So a scrape costs a
dict walk on the event loop, and an idle endpoint costs nothing.

Off unless ``metrics = "ADDR:PORT"`` (``--metrics``) is given. The address
must be loopback (127.0.0.0/8, ::1) unless ``metrics_public = true``
(``--metrics-public``) says otherwise: the page names every peer and its
traffic, which is for the operator, not for the LAN.

Label cardinality is bounded: per-peer series exist for the peers the node
keeps state for (static and allowed peers, and members learned from
discovery, at most ``discovery.service.MAX_MEMBERS`` per round; strangers
never get a Peer entry), and at most :data:`MAX_PEERS` of those are
exported; the rest are counted in ``p2pvpn_metrics_peers_omitted``. Every
other label takes its values from a fixed set (drop reasons, states,
limit names, counter names of the code).

The HTTP side is a deliberately small HTTP/1.0 responder on trio, owned
by the node's nursery: ``GET /metrics`` (and ``/``) answer, anything else
gets 404; requests are bounded in size, time and concurrency.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from p2pvpn.errors import ConfigError

log = logging.getLogger(__name__)

MAX_PEERS = 1024           # peers with their own series; more are counted, not exported
MAX_REQUEST = 8192         # bytes of request head we read
REQUEST_TIMEOUT = 5.0      # seconds for one request, reading and answering
MAX_CONNECTIONS = 8        # scrapes answered at once; more wait
PEER_STATES = ("connecting", "up", "down")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus reads

Snapshot = Callable[[], dict[str, Any]]


# -- the address -----------------------------------------------------------------


def parse_address(text: str, public: bool = False) -> tuple[str, int]:
    """``127.0.0.1:9469`` or ``[::1]:9469`` -> (host, port); a ConfigError naming the key otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"metrics: {text!r} is not ADDR:PORT (e.g. 127.0.0.1:9469 or [::1]:9469)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"metrics: {host!r} is not an IP address (e.g. 127.0.0.1:9469)") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"metrics: port {port_text!r} is not within 1..65535")
    if not address.is_loopback and not public:
        raise ConfigError(f"metrics: {address} is not a loopback address; the page lists every peer and its "
                          "traffic, so set metrics_public = true (--metrics-public) to serve it there")
    return str(address), int(port_text)


# -- the collector ------------------------------------------------------------------


class NodeCollector(Collector):
    """Metric families from one status snapshot per scrape (no bookkeeping of its own)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield from _node(s)
        yield from _peers(s.get("peers") or [])
        yield from _exit(s)
        yield from _relay(s)
        yield from _dht(s.get("discovery"))
        yield from _limits(s.get("limits") or {})


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counts(name: str, doc: str, label: str, counts: dict[str, Any]) -> CounterMetricFamily:
    family = _counter(name, doc, (label,))
    for key, value in sorted(counts.items()):
        family.add_metric([str(key)], float(value))
    return family


def _node(s: dict[str, Any]) -> Iterator[Metric]:
    info = _gauge("p2pvpn_node_info", "This node: peer ID, network, overlay addresses (value 1).",
                  ("peer_id", "network", "ipv4", "ipv6"))
    info.add_metric([str(s.get("peer_id")), str(s.get("network")), str(s.get("ipv4")), str(s.get("ipv6"))], 1)
    yield info
    uptime = _gauge("p2pvpn_uptime_seconds", "Seconds since the node started.")
    uptime.add_metric([], float(s.get("uptime") or 0))
    yield uptime
    yield _counts("p2pvpn_drops", "Packets dropped node-wide (all peers, present and removed), by reason.",
                  "reason", s.get("drops_total") or {})
    yield _counts("p2pvpn_failures", "Contained failures (tunnels, control requests, handlers), by kind.",
                  "kind", s.get("failures") or {})
    yield _counts("p2pvpn_handshake_failures", "Tunnel handshakes that failed or were refused, by reason.",
                  "reason", s.get("handshake_failures") or {})
    yield _counts("p2pvpn_icmp_sent", "ICMP errors the node wrote to its TUN, by kind.",
                  "kind", s.get("icmp_sent") or {})


def _peers(peers: list[dict[str, Any]]) -> Iterator[Metric]:
    info = _gauge("p2pvpn_peer_info", "A known peer (value 1): name from its certificate where known, "
                  "overlay addresses, where it was learned from.", ("peer", "name", "ipv4", "ipv6", "learned_from"))
    state = _gauge("p2pvpn_peer_state", "The peer's tunnel state: 1 for the current state, 0 for the others.",
                   ("peer", "state"))
    path = _gauge("p2pvpn_peer_path", "The active tunnel's path (1): direct or relayed, and whether packets "
                  "go as UDP datagrams or on the stream.", ("peer", "path", "data_path"))
    rtt = _gauge("p2pvpn_peer_rtt_seconds", "Round-trip time of the tunnel's last keepalive.", ("peer",))
    bytes_ = _counter("p2pvpn_peer_bytes", "Bytes of IP packets carried with the peer, by direction.",
                      ("peer", "direction"))
    packets = _counter("p2pvpn_peer_packets", "IP packets carried with the peer, by direction.",
                       ("peer", "direction"))
    drops = _counter("p2pvpn_peer_drops", "Packets to or from the peer dropped, by reason.", ("peer", "reason"))
    changes = _counter("p2pvpn_peer_path_changes", "Times the peer's path changed (direct <-> relayed).", ("peer",))
    queued = _gauge("p2pvpn_peer_queued_packets", "Packets waiting in the peer's queue.", ("peer",))
    for p in peers[:MAX_PEERS]:
        pid = str(p["peer_id"])
        info.add_metric([pid, str(p.get("name") or ""), str(p.get("ipv4")), str(p.get("ipv6")),
                         str(p.get("learned_from") or "")], 1)
        for name in PEER_STATES:
            state.add_metric([pid, name], float(p.get("state") == name))
        if p.get("path"):
            path.add_metric([pid, str(p["path"]), str(p.get("data_path") or "stream")], 1)
        if p.get("rtt_ms") is not None:
            rtt.add_metric([pid], float(p["rtt_ms"]) / 1000)
        for direction in ("in", "out"):
            bytes_.add_metric([pid, direction], float(p.get(f"bytes_{direction}", 0)))
            packets.add_metric([pid, direction], float(p.get(f"packets_{direction}", 0)))
        for reason, count in sorted((p.get("drops") or {}).items()):
            drops.add_metric([pid, str(reason)], float(count))
        changes.add_metric([pid], float(p.get("path_changes") or 0))
        queued.add_metric([pid], float(p.get("queued") or 0))
    yield from (info, state, path, rtt, bytes_, packets, drops, changes, queued)
    count = _gauge("p2pvpn_peers", "Known peers, by state.", ("state",))
    for name in PEER_STATES:
        count.add_metric([name], float(sum(1 for p in peers if p.get("state") == name)))
    yield count
    omitted = _gauge("p2pvpn_metrics_peers_omitted", f"Peers beyond the first {MAX_PEERS}, not exported per peer.")
    omitted.add_metric([], float(max(0, len(peers) - MAX_PEERS)))
    yield omitted


def _exit(s: dict[str, Any]) -> Iterator[Metric]:
    client = s.get("exit_client")
    if client is not None:
        used = _gauge("p2pvpn_exit_in_use", "The exit this node sends its internet traffic through (1), "
                      "and how it was chosen.", ("peer", "mode"))
        if client.get("current"):
            used.add_metric([str(client["current"]), str(client.get("mode"))], 1)
        yield used
        switches = _counter("p2pvpn_exit_switches", "Times this node moved to another exit.")
        switches.add_metric([], float(client.get("switches") or 0))
        yield switches
    role = s.get("exit")
    if role is not None:
        packets = _counter("p2pvpn_exit_role_packets", "The exit role's nftables counters: packets forwarded, "
                           "returned, and refused by reason.", ("counter",))
        bytes_ = _counter("p2pvpn_exit_role_bytes", "The exit role's nftables counters, in bytes.", ("counter",))
        for name, c in sorted((role.get("counters") or {}).items()):
            packets.add_metric([name], float(c.get("packets", 0)))
            bytes_.add_metric([name], float(c.get("bytes", 0)))
        yield packets
        yield bytes_
        load = _gauge("p2pvpn_exit_role_load_ratio", "Forwarded rate over the advertised capacity (0..1).")
        load.add_metric([], float(role.get("load_permille") or 0) / 1000)
        yield load


def _relay(s: dict[str, Any]) -> Iterator[Metric]:
    nat = s.get("nat")
    if nat is not None:
        slots = _gauge("p2pvpn_relay_slots", "Relays holding a reservation (slot) for this node.")
        slots.add_metric([], float(len((nat.get("relay_slots") or {}).get("relays") or [])))
        yield slots
        accepted = _counter("p2pvpn_relayed_connections", "Relayed connections to this node, by outcome.",
                            ("outcome",))
        accepted.add_metric(["accepted"], float(nat.get("relayed_accepted") or 0))
        accepted.add_metric(["refused"], float(nat.get("relayed_refused") or 0))
        yield accepted
    relay = s.get("relay")
    if relay is None:
        return
    gauges = (("p2pvpn_relay_circuits", "Circuits this relay carries now.", "circuits"),
              ("p2pvpn_relay_reservations", "Reservations this relay holds now.", "reservations"))
    for name, doc, key in gauges:
        g = _gauge(name, doc)
        g.add_metric([], float(relay.get(key) or 0))
        yield g
    total = _counter("p2pvpn_relay_circuits_carried", "Circuits this relay has carried since start.")
    total.add_metric([], float(relay.get("circuits_total") or 0))
    yield total
    relayed = _counter("p2pvpn_relay_bytes", "Bytes this relay has carried in circuits.")
    relayed.add_metric([], float(relay.get("bytes_relayed") or 0))
    yield relayed
    yield _counts("p2pvpn_relay_refused", "Reservations and circuits this relay refused, by reason.",
                  "reason", relay.get("refused") or {})
    yield _counts("p2pvpn_relay_circuits_ended", "Circuits that ended, by why.", "why", relay.get("ended") or {})


def _dht(disc: dict[str, Any] | None) -> Iterator[Metric]:
    if disc is None:
        return
    records = _gauge("p2pvpn_dht_records", "Records held: verified member records learned by discovery, "
                     "values and provider records in the local DHT store.", ("kind",))
    records.add_metric(["members"], float(disc.get("members") or 0))
    for kind in ("stored_values", "provider_records"):
        if disc.get(kind) is not None:
            records.add_metric([kind], float(disc[kind]))
    yield records
    table = _gauge("p2pvpn_dht_routing_table_peers", "Peers in the DHT routing table.")
    table.add_metric([], float(disc.get("routing_table") or 0))
    yield table
    server = _gauge("p2pvpn_dht_server", "1 when the DHT serves others (server mode), 0 as a client.")
    server.add_metric([], float(disc.get("dht_mode") == "server"))
    yield server
    rejected = _counter("p2pvpn_dht_rejected", "Records and certificates rejected, by kind.", ("kind",))
    rejected.add_metric(["records"], float(disc.get("rejected_records") or 0))
    rejected.add_metric(["certificates"], float(disc.get("rejected_certificates") or 0))
    rejected.add_metric(["addresses"], float(disc.get("rejected_addrs") or 0))
    yield rejected
    rounds = _counter("p2pvpn_dht_discovery_rounds", "Discovery rounds run.")
    rounds.add_metric([], float(disc.get("rounds") or 0))
    yield rounds


def _limits(limits: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    hits = _counter("p2pvpn_limit_hits", "Times a resource limit refused something, by limit.", ("limit",))
    in_use = _gauge("p2pvpn_limit_in_use", "Resources in use, by limit.", ("limit",))
    ceiling = _gauge("p2pvpn_limit", "The configured limit.", ("limit",))
    for name, g in sorted(limits.items()):
        hits.add_metric([name], float(g.get("hits") or 0))
        in_use.add_metric([name], float(g.get("in_use") or 0))
        ceiling.add_metric([name], float(g.get("limit") or 0))
    yield from (hits, in_use, ceiling)


def node_snapshot(node: Any) -> dict[str, Any]:
    """The node's status (without the netlink dump) plus the DHT store's sizes, for one scrape."""
    s = node.status(listen=[])
    discovery = getattr(node, "discovery", None)
    if s.get("discovery") is not None and discovery is not None:
        kad = discovery.dht.kad  # KadDHT's public stores; size() is their own API
        s["discovery"]["stored_values"] = kad.value_store.size()
        s["discovery"]["provider_records"] = kad.provider_store.size()
    return s


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    """A registry of its own per node (tests run several nodes in one process), plus process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(snapshot))
    ProcessCollector(registry=registry)
    return registry


# -- the HTTP side -------------------------------------------------------------------


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def render_snapshot(snapshot: dict[str, Any]) -> bytes:
    """The page for one snapshot; runs in a worker thread (the snapshot is the scrape's own copy)."""
    return render(registry_for(lambda: snapshot))


def classify(request_head: bytes) -> tuple[int, bool]:
    """(status code, HEAD?) for one request head: 200 means "serve the page" (sans-IO)."""
    line = request_head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return 400, False
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return 405, False
    if target not in (b"/metrics", b"/"):
        return 404, False
    return 200, method == b"HEAD"


_ERRORS = {400: b"bad request\n", 404: b"not found; try /metrics\n", 405: b"only GET\n",
           500: b"internal error; see the node's log\n"}


def response(code: int, head_only: bool = False, body: bytes = b"") -> bytes:
    """The whole HTTP/1.0 answer: the page for 200, a short text otherwise."""
    if code != 200:
        return _http(code, b"text/plain; charset=utf-8", _ERRORS[code])
    return _http(200, CONTENT_TYPE.encode(), b"" if head_only else body, len(body))


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            500: b"Internal Server Error"}


def _http(code: int, content_type: bytes, body: bytes, length: int | None = None) -> bytes:
    head = b"HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        code, _REASONS[code], content_type, len(body) if length is None else length)
    return head + body


async def serve(host: str, port: int, snapshot: Snapshot, *,
                task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer scrapes until cancelled; ``started`` with the bound (host, port) pairs.

    The snapshot is taken on the event loop (where the counters live); turning it into text, which
    takes ~1 ms per peer, runs in a worker thread so a scrape never stalls the data path.
    """
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    renderers = trio.CapacityLimiter(1)

    async def answer(stream: trio.SocketStream) -> None:
        async with limiter, stream:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    data = b""
                    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < MAX_REQUEST:
                        chunk = await stream.receive_some(MAX_REQUEST)
                        if not chunk:
                            break
                        data += chunk
                    code, head_only = classify(data)
                    body = b""
                    if code == 200:
                        try:
                            body = await trio.to_thread.run_sync(render_snapshot, snapshot(), limiter=renderers)
                        except Exception:  # noqa: BLE001 - a collector bug must cost one scrape, not the node
                            log.exception("metrics: rendering failed")
                            code = 500
                    await stream.send_all(response(code, head_only, body))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("metrics client went away: %r", exc)

    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = [ls.socket.getsockname()[:2] for ls in listeners]
    log.info("metrics on http://%s/metrics", ", ".join(_fmt(h, p) for h, p in bound))
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(answer, listeners, handler_nursery=nursery)


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
