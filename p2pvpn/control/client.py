"""Ask a running node over its control socket (blocking; the CLI is not async)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from p2pvpn.errors import ControlError


def request(path: Path, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no node is running here (no control socket at {path})") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}; run as root or as the node's user") from None
        except ConnectionRefusedError:
            raise ControlError(f"no node is answering on {path} (stale socket)") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the node at {path}: {exc.strerror}") from None
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"the node at {path} did not answer within {timeout:.0f} s") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError("the node sent a malformed reply") from None
    if "error" in reply:
        raise ControlError(f"the node refused: {reply['error']}")
    return reply
