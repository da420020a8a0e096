"""The local control socket: ``p2pvpn status`` and ``peers`` ask the running node here.

A Unix stream socket, mode 0600 in a 0700 directory owned by the node's
user, and every connection's peer credentials are checked (root or the same
uid), so only the operator can read peer lists and counters. Protocol: one
JSON request line ``{"cmd": "status"}``, one JSON response line.

The socket lives in /run/p2pvpn/ by default (p2pvpn.node.control_path).
A file at its path that is not a socket is never removed: we refuse to
start instead. Each request runs in a failure boundary: a handler that
raises gets an error reply and a count (``control_error``), never ends the
node. Handlers may be async, so slow parts (netlink dumps) run in a thread.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from p2pvpn.errors import ControlError
from p2pvpn.supervisor import OnFailure, contained

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
Handler = Callable[[str], dict[str, Any] | Awaitable[dict[str, Any]]]
REQUEST_TIMEOUT = 10.0  # one request, reading and answering, at most this long


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _ignore(kind: str, detail: str) -> None:
    log.warning("%s: %s", kind, detail)


async def serve(
    path: Path,
    handler: Handler,
    on_failure: OnFailure = _ignore,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests until cancelled; removes the socket file on the way out.

    ``on_failure(kind, detail)`` hears of every request whose handler raised.
    """
    _make_parent(path)
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ControlError(f"{path} exists and is not a socket; remove it or choose another --control-socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by a node that crashed
        else:
            raise ControlError(f"another node is already running with control socket {path}")
        finally:
            probe.close()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot create control socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    try:
        os.chmod(path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        async with listener, trio.open_nursery() as nursery:
            while True:
                conn = await listener.accept()
                nursery.start_soon(_answer, conn, handler, on_failure)
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _make_parent(path: Path) -> None:
    """Create the socket's directory (e.g. /run/p2pvpn) as 0700 if it is missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create {path.parent} for the control socket: {exc.strerror}") from None


async def _reply(handler: Handler, cmd: str) -> dict[str, Any]:
    result = handler(cmd)
    return await result if inspect.isawaitable(result) else result


async def _answer(conn: trio.SocketStream, handler: Handler, on_failure: OnFailure = _ignore) -> None:
    async with conn:
        try:
            uid = _peer_uid(conn.socket)
            if uid not in (0, os.getuid()):
                await conn.send_all(b'{"error": "permission denied"}\n')
                return
            with trio.move_on_after(REQUEST_TIMEOUT):
                data = b""
                while b"\n" not in data and len(data) < MAX_REQUEST:
                    chunk = await conn.receive_some(MAX_REQUEST)
                    if not chunk:
                        break
                    data += chunk
                try:
                    request = json.loads(data.split(b"\n", 1)[0] or b"{}")
                    cmd = str(request.get("cmd", ""))
                except (ValueError, AttributeError) as exc:
                    encoded = json.dumps({"error": f"bad request: {exc}"})
                else:
                    encoded = json.dumps({"error": f"internal error answering {cmd!r} (see status failures)"})
                    with contained(on_failure, "control_error"):
                        encoded = json.dumps(await _reply(handler, cmd))  # unserializable is a failure too
                await conn.send_all(encoded.encode() + b"\n")
        except (trio.BrokenResourceError, OSError) as exc:
            log.debug("control client went away: %r", exc)
