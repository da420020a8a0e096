"""The CLI contract for mistakes: every user error is one short line and a non-zero exit, never a traceback.

Each case runs the installed ``p2pvpn`` (``python -m p2pvpn`` of this
interpreter) as a new process with an empty node directory, the way a user
first meets it: no node running, a malformed multiaddr, an unknown flag, a
broken key, a port in use, no permission. Subcommands are listed from the
application itself, so a new one is covered the day it is added. The
cases that need a TUN or a namespace live in tests/e2e/test_e2e_bad_input.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer

from p2pvpn.cli import app
from p2pvpn.testing.users import AS_NOBODY, NOBODY

TIMEOUT = 120.0  # a cold interpreter start importing libp2p, on a busy 2-core machine
MAX_ERROR_LINES = 2  # "a clear one-line error"; one more for a hint at most


def run(*args: str, cwd: Path | None = None, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PVPN")}
    env["COLUMNS"] = "100"
    return subprocess.run([*prefix, sys.executable, "-m", "p2pvpn", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False, cwd=cwd, env=env)


def assert_user_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero, no traceback, at most a couple of lines on stderr, the first ``p2pvpn: error: ...``."""
    both = result.stdout + result.stderr
    assert result.returncode != 0, both
    assert "Traceback" not in both and 'File "' not in both, both
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= MAX_ERROR_LINES, result.stderr
    assert lines[0].startswith("p2pvpn: error: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def command_paths() -> list[tuple[str, ...]]:
    """Every runnable subcommand, nested groups included (``("network", "create")``)."""
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = []

    def walk(cmd: object, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        elif path:
            paths.append(path)

    walk(root, ())
    return sorted(paths)


COMMANDS = command_paths()


def _parallel(jobs: list[tuple[str, ...]]) -> Iterator[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield from zip(jobs, pool.map(lambda args: run(*args), jobs))


def test_the_cli_has_the_documented_subcommands() -> None:
    names = {path[0] for path in COMMANDS}
    assert {"init", "id", "up", "relay", "status", "peers", "exits", "lab"} <= names


def test_every_subcommand_explains_itself_and_exits_0() -> None:
    for path, result in _parallel([(*path, "--help") for path in COMMANDS]):
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage" in result.stdout, (path, result.stdout)


def test_an_unknown_flag_is_one_line_for_every_subcommand() -> None:
    for path, result in _parallel([(*path, "--no-such-flag") for path in COMMANDS]):
        line = assert_user_error(result, "--no-such-flag")
        assert " ".join(path[:-1]) in line, line  # the line says where to look for help
        assert result.returncode == 2, (path, result.returncode)


def test_an_unknown_subcommand_is_one_line() -> None:
    assert_user_error(run("frobnicate"), "frobnicate")


def test_bare_p2pvpn_shows_the_help() -> None:
    result = run()
    assert "Traceback" not in result.stdout + result.stderr
    assert "Usage" in result.stdout + result.stderr
    assert result.returncode == 2


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """A directory initialised with ``p2pvpn init`` (which must succeed and exit 0)."""
    directory = tmp_path / "node"
    result = run("init", "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    assert (directory / "identity.key").stat().st_mode & 0o777 == 0o600
    return directory


def test_init_then_id_succeed(node_dir: Path) -> None:
    result = run("id", "--dir", str(node_dir), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info) >= {"peer_id", "ipv4", "ipv6", "network"}
    assert info["ipv4"].startswith("100.")


@pytest.mark.parametrize("command", ["status", "peers", "exits"])
def test_asking_a_node_that_is_not_running_is_one_line(node_dir: Path, command: str) -> None:
    assert_user_error(run(command, "--dir", str(node_dir)), "no node is running")
    assert_user_error(run(command, "--dir", str(node_dir), "--json"), "no node is running")


def test_id_without_a_key_is_one_line(tmp_path: Path) -> None:
    assert_user_error(run("id", "--dir", str(tmp_path)), "identity", "p2pvpn init")


def test_a_garbage_key_is_one_line(node_dir: Path) -> None:
    (node_dir / "identity.key").write_bytes(b"this is not a key")
    assert_user_error(run("id", "--dir", str(node_dir)), "identity.key")


def test_a_key_that_is_a_directory_is_one_line(node_dir: Path) -> None:
    (node_dir / "identity.key").unlink()
    (node_dir / "identity.key").mkdir()
    assert_user_error(run("id", "--dir", str(node_dir)), "identity.key")


def test_a_group_readable_key_is_one_line(node_dir: Path) -> None:
    (node_dir / "identity.key").chmod(0o640)
    assert_user_error(run("id", "--dir", str(node_dir)), "chmod 600")


def test_a_malformed_config_is_one_line(node_dir: Path) -> None:
    (node_dir / "config.toml").write_text("mtu = [this is not toml\n")
    assert_user_error(run("id", "--dir", str(node_dir)), "config.toml")


@pytest.mark.parametrize(
    ("line", "words"),
    [("trust_members = \"auto\"", ("trust_members was removed", "network create, invite, join", "allow_peers")),
     ("allow_any_peer = true", ("allow_any_peer was removed", "allow_peers", "network create, invite, join"))],
)
def test_an_old_config_with_a_removed_key_says_what_replaced_it(node_dir: Path, line: str, words: tuple[str, ...]) -> None:
    (node_dir / "config.toml").write_text(line + "\n")
    assert_user_error(run("up", "--dir", str(node_dir)), "config.toml", *words)


@pytest.mark.parametrize(("flags", "word"), [(("--trust-members", "yes"), "trust_members was removed"),
                                             (("--allow-any-peer",), "allow_any_peer was removed")])
def test_a_removed_flag_says_what_replaced_it(node_dir: Path, flags: tuple[str, ...], word: str) -> None:
    assert_user_error(run("up", "--dir", str(node_dir), *flags), word, "allow_peers")


def test_a_config_value_of_the_wrong_type_is_one_line(node_dir: Path) -> None:
    (node_dir / "config.toml").write_text('mtu = "large"\n')
    assert_user_error(run("id", "--dir", str(node_dir)), "mtu")


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--listen", "not-a-multiaddr", ("malformed multiaddr",)),
        ("--bootstrap", "/ip4/198.18.1.9/tcp/4242", ("/p2p/",)),
        ("--bootstrap", "/ip4/198.18.1.9/tcp/4242/p2p/NotAPeerId", ("NotAPeerId",)),
        ("--reachability", "sometimes", ("reachability",)),
    ],
)
def test_relay_refuses_bad_flags_in_one_line(tmp_path: Path, flag: str, value: str, words: tuple[str, ...]) -> None:
    assert_user_error(run("relay", "--dir", str(tmp_path / "relay"), flag, value), *words)


def test_relay_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("relay", "--dir", str(tmp_path / "relay"), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
                     "--control-socket", str(tmp_path / "relay.sock"))
    assert_user_error(result, "in use")


def test_init_where_the_directory_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(run("init", "--dir", str(blocker / "node")))


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="`setpriv` (util-linux) is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_init_without_permission_is_one_line(tmp_path: Path) -> None:
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o755)
    tmp_path.chmod(0o711)
    line = assert_user_error(run("init", "--dir", str(root_only / "node"), prefix=AS_NOBODY), "permission denied")
    assert str(root_only) in line, line
    assert not (root_only / "node").exists()
    assert NOBODY != os.geteuid()
