from pathlib import Path

import pytest
import trio

from p2pvpn.control import client, server
from p2pvpn.errors import ControlError


def handler(cmd: str) -> dict:
    return {"echo": cmd} if cmd != "bad" else {"error": "unknown command 'bad'"}


async def test_request_reply_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, handler)
        assert (path.stat().st_mode & 0o777) == 0o600
        reply = await trio.to_thread.run_sync(client.request, path, "status")
        assert reply == {"echo": "status"}
        with pytest.raises(ControlError, match="unknown command"):
            await trio.to_thread.run_sync(client.request, path, "bad")
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_second_server_refused_and_first_unharmed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, handler)
        with pytest.raises(ControlError, match="already running"):
            await server.serve(path, handler)
        assert (await trio.to_thread.run_sync(client.request, path, "x")) == {"echo": "x"}
        nursery.cancel_scope.cancel()


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening: what a crash leaves
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, handler)
        assert (await trio.to_thread.run_sync(client.request, path, "y")) == {"echo": "y"}
        nursery.cancel_scope.cancel()


def test_no_node_running(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no node is running"):
        client.request(tmp_path / "control.sock", "status")
