"""Running the node as a service: graceful stop (``p2pvpn down``, SIGTERM) and config reload (SIGHUP).

Stop: every tunnel is closed with ``Close(NORMAL, "node shutting down")``
so peers learn at once instead of after four keepalives; then the node's
contexts unwind as on any cancellation (exit routes and nft tables, TUN,
control socket), in the reverse order of their creation.

Reload: config.toml is read and validated again with the same flags the
node was started with. A malformed file is one log line and changes
nothing. Of a valid file, ``peers`` and ``allow_peers`` take effect now:
new static peers are dialed, tunnels of peers that stay listed are left
alone (same tunnel, same uptime), and peers no longer authorized (not
static, not allowed, and in an owned network no certificate presented)
are closed with ``Close(NOT_AUTHORIZED)`` and forgotten. Any other changed
key is named in one log line: it takes effect at the next start.
The network policy file (docs/protocol.md §17) is re-read on every
successful reload, after the peer lists.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import trio

from p2pvpn import config
from p2pvpn.errors import ConfigError
from p2pvpn.wire.codec import CloseCode

if TYPE_CHECKING:
    from libp2p.peer.id import ID

    from p2pvpn.membership.view import MembershipView
    from p2pvpn.session.manager import SessionManager

log = logging.getLogger(__name__)

COMMANDS = ("down", "reload")
CLOSE_GRACE = 3.0      # seconds for tunnels to send their Close frames on stop
RELOADED_KEYS = ("peers", "allow_peers")


def handle(node: Any, cmd: str) -> dict[str, Any]:
    """The control socket's ``down`` and ``reload``, for a node and a relay (p2pvpn.relay_node) alike."""
    if cmd == "down":
        log.info("stop requested over the control socket")
        node.stop()
        return {"stopping": True, "role": getattr(node, "ROLE", "node"), "peer_id": str(node.peer_id)}
    return node.reload()  # type: ignore[no-any-return]


def cert_name(view: MembershipView | None, peer_id: ID) -> str | None:
    """The name in the certificate the peer presented, if it presented one."""
    if view is None:
        return None
    cert = view.presented.get(peer_id.to_bytes())
    return cert.name if cert is not None else None


async def close_tunnels(manager: SessionManager, timeout: float = CLOSE_GRACE) -> int:
    """Close every tunnel with Close(NORMAL) and wait (bounded) for them to end; how many were open."""
    closing = 0
    for peer in list(manager.peers.values()):
        peer.wanted = False  # no redial while we stop
        if peer.tunnel is not None:
            peer.tunnel.close(CloseCode.NORMAL, "node shutting down")
            closing += 1
    with trio.move_on_after(timeout):
        while any(p.tunnel is not None for p in manager.peers.values()):
            await trio.sleep(0.05)
    log.info("closed %d tunnel(s)", closing)
    return closing


# -- reload -------------------------------------------------------------------


def reload(node: Any) -> dict[str, Any]:
    """Re-read config.toml; apply its peer lists; keep everything if it is malformed."""
    try:
        new = read_config(node)
        if node.peer_id in dict(new.peer_infos()):
            raise ConfigError("peers: the list contains this node's own peer ID")
    except ConfigError as exc:
        return refused(exc)
    old: config.Config = node.config
    if old.exit_via:  # the node runs with the hidden-path adjustments (p2pvpn.exit.multihop)
        from p2pvpn.exit.multihop import hidden_config

        new = hidden_config(new)
    later = restart_needed(old, new, RELOADED_KEYS)
    summary: dict[str, Any] = {"added": 0, "removed": 0, "kept": 0}
    if node.manager is not None:
        summary = apply_peer_lists(node.manager, old, new, own=node.peer_id)
    node.config = dataclasses.replace(old, peers=new.peers, allow_peers=new.allow_peers)
    if node.policy is not None:  # the network policy file too (its service also polls it every second)
        node.policy.reload()
    log.info("reloaded %s: %d peer(s) added, %d removed, %d kept", node.directory / config.CONFIG_FILE,
             summary["added"], summary["removed"], summary["kept"])
    return {"reloaded": True, "restart_needed": later, **summary}


def read_config(node: Any) -> config.Config:
    """``node``'s config.toml read and validated again, merged with the flags it was started with.

    Raises ConfigError; the caller answers with :func:`refused` and changes nothing.
    """
    path = node.directory / config.CONFIG_FILE
    return config.build(config.read_file(path), dict(node.start_overrides))


def refused(exc: ConfigError) -> dict[str, Any]:
    """A reload that changes nothing: one log line, and the reply saying why."""
    log.warning("reload refused, running configuration kept: %s", exc)
    return {"error": f"reload refused, running configuration kept: {exc}"}


def restart_needed(old: config.Config, new: config.Config, reloaded: tuple[str, ...]) -> list[str]:
    """The keys that changed but are not in ``reloaded`` (named in one log line: they wait for a restart)."""
    later = [f.name for f in dataclasses.fields(old)
             if f.name not in reloaded and getattr(old, f.name) != getattr(new, f.name)]
    if later:
        log.warning("reload: %s changed; that takes effect at the next start", ", ".join(later))
    return later


def apply_peer_lists(manager: SessionManager, old: config.Config, new: config.Config, own: ID) -> dict[str, int]:
    """Make the running peer set match ``new``'s peers/allow_peers without touching peers that stay."""
    old_static = dict(old.peer_infos())
    new_static = {pid: addr for pid, addr in new.peer_infos() if pid != own}
    manager.allow_peers = {config.parse_peer_id(p) for p in new.allow_peers}
    added = removed = kept = 0
    for pid, addr in new_static.items():
        if old_static.get(pid) != addr or pid not in manager.peers:
            manager.add_static_peer(pid, [addr])
            added += 1
    for pid, peer in list(manager.peers.items()):
        if pid in new_static:
            kept += pid in old_static and old_static[pid] == new_static[pid]
            continue
        if peer.learned_from == "static":  # no longer a static peer: dialed only if discovery knows it
            peer.learned_from = "discovery" if peer.record is not None else "inbound"
            peer.wanted = peer.record is not None and manager.membership is not None
        if _authorized(manager, pid, peer.record is not None):
            kept += peer.tunnel is not None
            continue
        peer.wanted = False
        if peer.tunnel is not None:  # its end removes the peer (not wanted)
            peer.tunnel.close(CloseCode.NOT_AUTHORIZED, "removed from the peer's configuration")
        else:
            manager.forget(pid)
        removed += 1
    return {"added": added, "removed": removed, "kept": kept}


def _authorized(manager: SessionManager, pid: ID, has_record: bool) -> bool:
    """Still welcome without the static list: allowed, or (owned network) a member by certificate."""
    if pid in manager.allow_peers:
        return True
    view = manager.membership
    return view is not None and (has_record or pid.to_bytes() in view.presented)
