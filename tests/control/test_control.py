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


async def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="is not a socket"):
        await server.serve(path, handler)
    assert path.read_text() == "precious"


async def test_a_failing_handler_gets_an_error_reply_and_is_counted(tmp_path: Path) -> None:
    from p2pvpn.supervisor import Failures

    failures = Failures()
    calls: list[str] = []

    async def fragile(cmd: str) -> dict:
        calls.append(cmd)
        await trio.sleep(0)
        if cmd == "status":
            raise KeyError("formatter bug")
        if cmd == "unserializable":
            return {"x": object()}
        return {"ok": cmd}

    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path, fragile, failures.reporter("control"))
        for cmd in ("status", "unserializable"):
            with pytest.raises(ControlError, match="internal error"):
                await trio.to_thread.run_sync(client.request, path, cmd)
        assert (await trio.to_thread.run_sync(client.request, path, "peers")) == {"ok": "peers"}
        nursery.cancel_scope.cancel()
    assert failures.as_dict() == {"control_error": 2}
    assert calls == ["status", "unserializable", "peers"]


def test_default_control_path_is_under_run_and_distinct_per_dir(tmp_path: Path) -> None:
    import os

    from p2pvpn.config import Config
    from p2pvpn.node import RUN_DIR, control_path

    a, b = tmp_path / "a", tmp_path / "nested" / "a"
    pa, pb = control_path(Config(), a), control_path(Config(), b)
    if os.geteuid() == 0:
        assert pa.parent == RUN_DIR and pb.parent == RUN_DIR
        assert pa != pb and pa.name.startswith("a-")
        assert len(str(control_path(Config(), tmp_path / ("x" * 200)))) < 100  # fits sun_path (108)
    else:
        assert pa == a / "control.sock"
    assert control_path(Config(), a) == pa  # `p2pvpn status --dir` finds the same path
    assert control_path(Config(control_socket=str(tmp_path / "s")), a) == tmp_path / "s"


def test_a_client_finds_a_node_that_runs_as_another_user(tmp_path: Path) -> None:
    """Root asking (``p2pvpn status --dir D``) a node that runs as a user, whose socket is D/control.sock."""
    from p2pvpn.config import Config
    from p2pvpn.node import control_path, find_control_path

    (tmp_path / "control.sock").touch()
    assert find_control_path(Config(), tmp_path) == tmp_path / "control.sock"
    (tmp_path / "control.sock").unlink()
    assert find_control_path(Config(), tmp_path) == control_path(Config(), tmp_path)
