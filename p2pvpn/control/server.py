"""The local control socket: ``p2pvpn status`` and ``peers`` ask the running node here.

A Unix stream socket, mode 0600 in a 0700 directory owned by the node's
user, and every connection's peer credentials are checked (root or the same
uid), so only the operator can read peer lists and counters. Protocol: one
JSON request line ``{"cmd": "status"}``, one JSON response line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from p2pvpn.errors import ControlError

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
Handler = Callable[[str], dict[str, Any]]


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


async def serve(path: Path, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer control requests until cancelled; removes the socket file on the way out."""
    if path.exists():
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
                nursery.start_soon(_answer, conn, handler)
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _answer(conn: trio.SocketStream, handler: Handler) -> None:
    async with conn:
        try:
            uid = _peer_uid(conn.socket)
            if uid not in (0, os.getuid()):
                await conn.send_all(b'{"error": "permission denied"}\n')
                return
            with trio.move_on_after(5):
                data = b""
                while b"\n" not in data and len(data) < MAX_REQUEST:
                    chunk = await conn.receive_some(MAX_REQUEST)
                    if not chunk:
                        break
                    data += chunk
                try:
                    request = json.loads(data.split(b"\n", 1)[0] or b"{}")
                    cmd = str(request.get("cmd", ""))
                    reply = handler(cmd)
                except (ValueError, AttributeError) as exc:
                    reply = {"error": f"bad request: {exc}"}
                await conn.send_all(json.dumps(reply).encode() + b"\n")
        except (trio.BrokenResourceError, OSError) as exc:
            log.debug("control client went away: %r", exc)
