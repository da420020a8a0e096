"""The node's configuration: one frozen object built from config.toml plus flags, validated once.

Every key of ``config.toml`` is also a flag of ``p2pvpn up`` (``mtu`` ->
``--mtu``, ``allow_peers`` -> ``--allow-peer``); flags win over the file.
Validation happens here so the rest of the code can trust the values, and
each problem is reported as one line naming the key.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multiaddr

from p2pvpn.errors import ConfigError
from p2pvpn.exit.policy import DEFAULT_ALLOW, DEFAULT_DENY, ExitPolicy
from p2pvpn.membership.network import is_dns_label
from p2pvpn.names.suffix import check_suffix

if TYPE_CHECKING:  # importing libp2p costs seconds: `p2pvpn --help` should not pay it
    from libp2p.peer.id import ID

CONFIG_FILE = "config.toml"
DEFAULT_PORT = 4242
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TUN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Config:
    """Settings of one node (see the field docstrings for why each exists)."""

    network: str = "default"
    """Network name: nodes only form tunnels within the same network; it also seeds the overlay IPv6 /64."""
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)
    """libp2p multiaddrs to listen on (TCP; ``/udp/N/quic-v1`` adds QUIC)."""
    peers: tuple[str, ...] = ()
    """Static peers, each a multiaddr ending in /p2p/<peer-id>; the node keeps a tunnel to each."""
    bootstrap: tuple[str, ...] = ()
    """DHT bootstrap peers, each a multiaddr ending in /p2p/<peer-id>; any node can serve as one."""
    dht: str = "auto"
    """DHT mode: auto (a client until AutoNAT finds us reachable; a node without bootstrap peers or with reachability public serves from the start), server, client (only ask), or off (static peers only)."""
    reachability: str = "auto"
    """auto (find out with AutoNAT), public (dialable from outside) or private (behind a NAT: use relays)."""
    hole_punch: bool = True
    """Upgrade relayed connections to direct ones by hole punching (DCUtR) where the NATs allow."""
    relay_reservations: int = 2
    """How many relays an unreachable node keeps a slot on (found in the DHT); more is more redundancy."""
    static_relays: tuple[str, ...] = ()
    """Relays to reserve on first when behind a NAT, each a multiaddr ending in /p2p/<peer-id>; any circuit relay v2 (a go-libp2p relay too)."""
    relay: bool = False
    """Offer the relay role: carry connections for nodes behind NATs (announced in our record)."""
    relay_max_reservations: int = 128
    """Relay: nodes that may hold a slot on us at once."""
    relay_max_circuits: int = 256
    """Relay: relayed connections carried at once, in total."""
    relay_max_circuits_per_peer: int = 16
    """Relay: relayed connections carried at once for one peer (either end)."""
    relay_member_duration: int = 0
    """Relay: seconds a relayed connection between members may last; 0 = no limit (a VPN tunnel lives long)."""
    relay_member_bytes: int = 0
    """Relay: bytes a relayed connection between members may carry; 0 = no limit."""
    relay_stranger_duration: int = 120
    """Relay: seconds a relayed connection involving a non-member may last (go-libp2p's default); 0 = no limit."""
    relay_stranger_bytes: int = 131072
    """Relay: bytes a relayed connection involving a non-member may carry (go-libp2p's default); 0 = no limit."""
    relay_serve_strangers: bool = True
    """Relay: also serve peers without a valid record in our network, with the stranger limits."""
    exit: bool = False
    """Offer the exit role: forward overlay traffic to the internet with masquerade, within exit_allow/exit_deny (root, nft)."""
    exit_allow: tuple[str, ...] = DEFAULT_ALLOW
    """Exit: destinations let out, as PREFIX[:PORTS] (e.g. 0.0.0.0/0, [::/0]:80,443); at most 16."""
    exit_deny: tuple[str, ...] = DEFAULT_DENY
    """Exit: destinations refused, deny wins over allow; default: private, loopback, link-local, multicast, CGNAT/overlay, reserved."""
    exit_capacity_mbit: int = 0
    """Exit: capacity advertised in our record (Mbit/s), and the base of the published load; 0 = not stated."""
    exit_client_rate_mbit: int = 0
    """Exit: per-client rate limit in Mbit/s, each direction; 0 = none."""
    use_exit: str = "none"
    """Send internet traffic through an exit: none, auto (choose among the network's exits) or an exit's peer ID."""
    exit_via: str = ""
    """Reach the exit through a circuit relay (auto or a relay's peer ID), so the exit never sees our address; empty = directly."""
    dns: bool = True
    """Answer DNS for members' names (NAME.<network label>.<dns_suffix>) on our overlay addresses, port 53 (owned networks)."""
    dns_suffix: str = "internal"
    """The names' suffix after the network label: ``internal`` gives alpha.lab.internal (1-4 DNS labels)."""
    dns_label: str = ""
    """The network label in names (NAME.<label>.<dns_suffix>); empty: the network's name, if it is a DNS label. NAME.<network ID>.<dns_suffix> always works."""
    dns_resolved: bool = True
    """Hook the TUN into systemd-resolved (per-link DNS server and ~domain) when it runs; undone on exit."""
    mdns: bool = False
    """Also find peers of the same network on the local link with mDNS."""
    announce: tuple[str, ...] = ()
    """Addresses to advertise instead of the listen addresses (e.g. a VPS's public IP behind 1:1 NAT)."""
    record_ttl: float = 300.0
    """Seconds a published node record stays valid; it is republished at half this time."""
    discovery_interval: float = 10.0
    """Seconds between DHT lookups of the network's members."""
    allow_peers: tuple[str, ...] = ()
    """Extra peer IDs allowed to open a tunnel to us without being in ``peers`` (and without a membership certificate)."""
    tun: str = "p2pvpn0"
    """Name of the TUN interface to create."""
    mtu: int = 1400
    """MTU of the TUN interface; 1280 at least, so IPv6 works."""
    offload: bool = True
    """TUN segmentation offload: move TCP/UDP in 64 KiB super-packets when the kernel allows (falls back by itself)."""
    udp: bool = True
    """Datagram path: send packets to directly connected peers as encrypted UDP datagrams (the stream stays as fallback)."""
    queue_packets: int = 1024
    """Packets queued per peer before new ones are dropped (and counted)."""
    keepalive: float = 5.0
    """Seconds between keepalives; a tunnel silent for four times this is closed."""
    on_demand: bool = False
    """Open a tunnel to a member when the first packet for it arrives, close it after ``idle_timeout`` (static peers stay)."""
    idle_timeout: float = 300.0
    """On demand: seconds without traffic after which a tunnel closes (Close IDLE); the peer that sees traffic reopens."""
    control_socket: str = ""
    """Path of the local control socket; empty means /run/p2pvpn/<dir name>-<hash>.sock (<dir>/control.sock for non-root)."""
    log_level: str = "info"
    """One of debug, info, warning, error."""
    metrics: str = ""
    """Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9469); empty: off. Loopback only unless metrics_public."""
    metrics_public: bool = False
    """Allow a non-loopback metrics address (the page lists every peer and its traffic)."""
    limit_conns: int = 256
    """Limit: connections held by non-members at once, in total (members are not counted; docs/limits.md)."""
    limit_conns_per_peer: int = 2
    """Limit: connections of one non-member peer at once."""
    limit_conns_per_ip: int = 16
    """Limit: connections of non-members from one IP address (or through one relay) at once."""
    limit_streams_per_peer: int = 32
    """Limit: inbound streams of one non-member peer being handled at once, all protocols."""
    limit_streams_per_protocol: int = 256
    """Limit: inbound streams of one protocol from non-members being handled at once."""
    limit_handshakes_known: int = 64
    """Limit: tunnel handshakes in progress from known peers (static, allowed, with a record)."""
    limit_handshakes: int = 32
    """Limit: tunnel handshakes in progress from peers we don't know yet (each may cost a DHT lookup)."""
    limit_handshakes_per_peer: int = 2
    """Limit: tunnel handshakes in progress from one unknown peer."""
    limit_handshakes_per_ip: int = 8
    """Limit: tunnel handshakes in progress from unknown peers at one IP address."""
    limit_lookups: int = 8
    """Limit: DHT record lookups in flight that others cause (unknown callers, relay clients)."""
    limit_relay_hops: int = 64
    """Relay limit: hop streams (RESERVE/CONNECT) being negotiated at once by peers we don't know."""
    limit_relay_hops_per_peer: int = 4
    """Relay limit: hop streams being negotiated at once by one peer we don't know."""
    limit_relay_reservations_per_ip: int = 4
    """Relay limit: slots held by non-members from one IP address."""
    limit_relay_member_reservations: int = 32
    """Relay: slots of relay_max_reservations that non-members can never take (kept for members)."""
    test_clock_skew: int = 300
    """For tests only (no flag, not in the template): seconds of clock difference tolerated when checking membership certificates (CLOCK_SKEW of docs/protocol.md §15.4); a short one lets a test see certificates expire."""

    def peer_infos(self) -> list[tuple[ID, multiaddr.Multiaddr]]:
        """Static peers as (peer ID, address without /p2p) pairs."""
        return [split_peer_addr(a) for a in self.peers]

    def bootstrap_infos(self) -> list[tuple[ID, multiaddr.Multiaddr]]:
        return [split_peer_addr(a, key="bootstrap") for a in self.bootstrap]

    def static_relay_infos(self) -> list[tuple[ID, multiaddr.Multiaddr]]:
        return [split_peer_addr(a, key="static_relays") for a in self.static_relays]


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Config)}

REMOVED: dict[str, str] = {
    "trust_members": "members are now the holders of a certificate (p2pvpn network create, invite, join); "
                     "list other peers in peers or allow_peers",
    "allow_any_peer": "list the peers that may connect in allow_peers (--allow-peer), "
                      "or give them certificates (p2pvpn network create, invite, join)",
}
"""Keys that existed once, with what replaces them: an old config.toml gets this, not 'unknown key'."""


def removed(key: str) -> ConfigError:
    """The one-line error for a key (or flag) that was removed."""
    return ConfigError(f"{key} was removed: {REMOVED[key]}")


def field_doc(name: str) -> str:
    """The field's docstring, read from this module's source (it is the flag's help text)."""
    return _FIELD_DOCS.get(name, "")


def _read_field_docs() -> dict[str, str]:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Config))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docs[prev.target.id] = str(node.value.value)  # type: ignore[union-attr]
    return docs


_FIELD_DOCS = _read_field_docs()


def _one_line(exc: Exception) -> str:
    """A library's error text with line breaks and other unprintables escaped: it may quote the raw input."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))


def split_peer_addr(text: str, key: str = "peers") -> tuple[ID, multiaddr.Multiaddr]:
    """Parse '<multiaddr>/p2p/<peer-id>' into its parts, or raise a one-line ConfigError."""
    try:
        maddr = multiaddr.Multiaddr(text)
    except Exception as exc:  # multiaddr raises several unrelated types for bad input
        raise ConfigError(f"{key}: malformed multiaddr {text!r}: {_one_line(exc)}") from None
    # The last /p2p names the peer: in .../p2p/<relay>/p2p-circuit/p2p/<peer> the first one is the relay.
    canonical = str(maddr)
    head, sep, peer = canonical.rpartition("/p2p/")
    if not sep or not head or not peer or "/" in peer:
        raise ConfigError(f"{key}: address {text!r} must end in /p2p/<peer-id>")
    peer_id = parse_peer_id(peer)
    return peer_id, multiaddr.Multiaddr(head)


def parse_peer_id(text: str) -> ID:
    """A peer ID must be a base58 multihash: identity (inlined key) or sha2-256."""
    from libp2p.peer.id import ID

    try:
        peer_id = ID.from_base58(text)
    except Exception:  # base58 decoding errors
        raise ConfigError(f"invalid peer ID {text!r}") from None
    raw = peer_id.to_bytes()
    valid = len(raw) >= 2 and raw[1] == len(raw) - 2 and (raw[0] == 0x12 and raw[1] == 32 or raw[0] == 0x00 and raw[1] <= 42)
    if not valid:
        raise ConfigError(f"invalid peer ID {text!r} (not a multihash)")
    return peer_id


def _prefixed(key: str, text: str) -> ID:
    try:
        return parse_peer_id(text)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc} (expected none, auto or a peer ID)" if key == "use_exit"
                          else f"{key}: {exc} (expected auto or a relay's peer ID)") from None


def _coerce(name: str, value: Any) -> Any:
    default = FIELDS[name].default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(f"unhandled config type for {name}")


def validate(cfg: Config) -> Config:
    """Check every value once; the node trusts a validated Config."""
    if not _NAME_RE.match(cfg.network):
        raise ConfigError(f"network: {cfg.network!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    if not _TUN_RE.match(cfg.tun):
        raise ConfigError(f"tun: {cfg.tun!r} is not a valid interface name (1-15 characters, no '/' or spaces)")
    if not 1280 <= cfg.mtu <= 65535:
        raise ConfigError(f"mtu: {cfg.mtu} is out of range 1280..65535")
    if not 16 <= cfg.queue_packets <= 65536:
        raise ConfigError(f"queue_packets: {cfg.queue_packets} is out of range 16..65536")
    if not 0.1 <= cfg.keepalive <= 300:
        raise ConfigError(f"keepalive: {cfg.keepalive} is out of range 0.1..300 seconds")
    if not 0.5 <= cfg.idle_timeout <= 86400:
        raise ConfigError(f"idle_timeout: {cfg.idle_timeout} is out of range 0.5..86400 seconds")
    if cfg.dht not in ("auto", "server", "client", "off"):
        raise ConfigError(f"dht: {cfg.dht!r} is not one of auto, server, client, off")
    if cfg.reachability not in ("auto", "public", "private"):
        raise ConfigError(f"reachability: {cfg.reachability!r} is not one of auto, public, private")
    if not 0 <= cfg.relay_reservations <= 8:
        raise ConfigError(f"relay_reservations: {cfg.relay_reservations} is out of range 0..8")
    for name, low, high in (
        ("relay_max_reservations", 1, 1_000_000), ("relay_max_circuits", 1, 1_000_000),
        ("relay_max_circuits_per_peer", 1, 1_000_000), ("relay_member_duration", 0, 2**32 - 1),
        ("relay_stranger_duration", 0, 2**32 - 1), ("relay_member_bytes", 0, 2**63 - 1),
        ("relay_stranger_bytes", 0, 2**63 - 1),
    ):  # fmt: skip
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is out of range {low}..{high}")
    for name in (f for f in FIELDS if f.startswith("limit_")):
        low = 0 if name == "limit_relay_member_reservations" else 1
        if not low <= getattr(cfg, name) <= 1_000_000:
            raise ConfigError(f"{name}: {getattr(cfg, name)} is out of range {low}..1000000")
    if not 0 <= cfg.test_clock_skew <= 3600:
        raise ConfigError(f"test_clock_skew: {cfg.test_clock_skew} is out of range 0..3600 seconds")
    if not 2 <= cfg.record_ttl <= 24 * 3600:
        raise ConfigError(f"record_ttl: {cfg.record_ttl} is out of range 2..86400 seconds")
    if not 0.2 <= cfg.discovery_interval <= 3600:
        raise ConfigError(f"discovery_interval: {cfg.discovery_interval} is out of range 0.2..3600 seconds")
    if cfg.bootstrap and cfg.dht == "off":
        raise ConfigError("bootstrap: needs the DHT; remove dht = \"off\"")
    for addr in cfg.bootstrap:
        split_peer_addr(addr, key="bootstrap")
    for addr in cfg.static_relays:
        split_peer_addr(addr, key="static_relays")
    for addr in cfg.announce:
        try:
            multiaddr.Multiaddr(addr)
        except Exception as exc:  # multiaddr raises several unrelated types for bad input
            raise ConfigError(f"announce: malformed multiaddr {addr!r}: {_one_line(exc)}") from None
    ExitPolicy.build(cfg.exit_allow, cfg.exit_deny, cfg.network)  # one-line ConfigError for a bad entry
    for name in ("exit_capacity_mbit", "exit_client_rate_mbit"):
        if not 0 <= getattr(cfg, name) <= 1_000_000:
            raise ConfigError(f"{name}: {getattr(cfg, name)} is out of range 0..1000000")
    if cfg.use_exit not in ("none", "auto"):
        _prefixed("use_exit", cfg.use_exit)
    try:
        check_suffix(cfg.dns_suffix)
    except ValueError as exc:
        raise ConfigError(f"dns_suffix: {exc}") from None
    if cfg.dns_label and not is_dns_label(cfg.dns_label):
        raise ConfigError(f"dns_label: {cfg.dns_label!r} is not a lowercase DNS label (a-z 0-9 -, at most 63)")
    if cfg.use_exit != "none" and cfg.exit:
        raise ConfigError("use_exit: an exit node does not use another exit (drop exit or use_exit)")
    if cfg.exit_via:
        if cfg.use_exit == "none":
            raise ConfigError("exit_via: needs use_exit (auto or an exit's peer ID)")
        if cfg.dht == "off" or not cfg.bootstrap:
            raise ConfigError("exit_via: needs the DHT and a bootstrap peer (the relay and exits are found there)")
        if cfg.exit_via != "auto":
            _prefixed("exit_via", cfg.exit_via)
            if cfg.exit_via == cfg.use_exit:
                raise ConfigError("exit_via: the relay must be another peer than the exit it hides us from")
    if cfg.metrics:
        from p2pvpn.metrics import parse_address

        parse_address(cfg.metrics, cfg.metrics_public)
    if cfg.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: {cfg.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    if not cfg.listen:
        raise ConfigError("listen: at least one address is needed")
    for addr in cfg.listen:
        try:
            maddr = multiaddr.Multiaddr(addr)
        except Exception as exc:  # multiaddr raises several unrelated types for bad input
            raise ConfigError(f"listen: malformed multiaddr {addr!r}: {_one_line(exc)}") from None
        names = [p.name for p in maddr.protocols()]
        if not names or names[0] not in ("ip4", "ip6") or not ("tcp" in names or "quic-v1" in names):
            raise ConfigError(f"listen: {addr!r} must be /ip4|ip6/<addr>/tcp/<port> or /udp/<port>/quic-v1")
    for addr in cfg.peers:
        split_peer_addr(addr)
    for pid in cfg.allow_peers:
        parse_peer_id(pid)
    return cfg


def read_file(path: Path) -> dict[str, Any]:
    """Parse config.toml into raw values; a missing file means all defaults."""
    try:
        text = path.read_text(encoding="utf-8")  # TOML is UTF-8, whatever the locale
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table, without a limit
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    for key in data:
        if key in REMOVED:
            raise ConfigError(f"{path}: {removed(key)}")
        if key not in FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(FIELDS)})")
    return data


def build(file_values: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """Merge file values and flags (flags win; None means 'not given') into a validated Config."""
    merged: dict[str, Any] = {}
    for source in (file_values, {k: v for k, v in overrides.items() if v is not None}):
        for key, value in source.items():
            if key in REMOVED:
                raise removed(key)
            if key not in FIELDS:
                raise ConfigError(f"unknown config key {key!r}")
            merged[key] = _coerce(key, value)
    return validate(Config(**merged))


def load(directory: Path, **overrides: Any) -> Config:
    return build(read_file(directory / CONFIG_FILE), overrides)


def template(cfg: Config = Config()) -> str:
    """A commented config.toml listing every key with its default."""
    lines = ["# p2pvpn node configuration. Every key is also a flag of 'p2pvpn up'.", ""]
    for name, f in FIELDS.items():
        if name.startswith("test_"):  # hidden: for tests, documented in the field's docstring
            continue
        value = getattr(cfg, name)
        lines.append(f"# {field_doc(name)}")
        rendered = _toml_value(value)
        commented = name not in ("network", "listen", "peers", "bootstrap", "tun", "mtu")
        lines.append(f"{'# ' if commented else ''}{name} = {rendered}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise AssertionError(type(value))
