"""``p2pvpn up`` refuses bad input with one line and a non-zero exit, and leaves nothing behind.

Each case runs in a namespace of its own, so even a node that wrongly
started could not touch the machine's network.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from p2pvpn.lab.demo import LabNode, p2pvpn_argv
from p2pvpn.testing.users import AS_NOBODY, NOBODY

pytestmark = pytest.mark.netns


@pytest.fixture
def node(make_lab) -> LabNode:  # type: ignore[no-untyped-def]
    """An initialised node in its own namespace, not running."""
    return make_lab(1, start=False).nodes[0]


def _up(node: LabNode, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = p2pvpn_argv("up", "--dir", str(node.directory), "--listen", node.listen, "--tun", node.tun, *args)
    return node.host.run(*prefix, *argv, check=False, timeout=60)


def assert_refused(node: LabNode, result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero exit, exactly one line on stderr, no traceback, no TUN left; the line."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("p2pvpn: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert node.host.run("ip", "link", "show", node.tun, check=False).returncode != 0, "TUN left behind"
    return lines[0]


@pytest.mark.parametrize(
    ("peer", "words"),
    [
        ("not-a-multiaddr", ("malformed multiaddr",)),
        ("/ip4/198.18.1.99/tcp/4242", ("/p2p/<peer-id>",)),
        ("/ip4/198.18.1.99/tcp/4242/p2p/NotAPeerId", ("NotAPeerId",)),
    ],
)
def test_a_malformed_peer_is_refused(node: LabNode, peer: str, words: tuple[str, ...]) -> None:
    assert_refused(node, _up(node, "--peer", peer), *words)


def test_an_unknown_config_key_is_refused(node: LabNode) -> None:
    config = node.directory / "config.toml"
    config.write_text(config.read_text() + '\ncolour = "blue"\n')
    assert_refused(node, _up(node), "unknown key", "colour")


def test_a_group_readable_identity_key_is_refused(node: LabNode) -> None:
    (node.directory / "identity.key").chmod(0o640)
    assert_refused(node, _up(node), "identity.key", "chmod 600")


def test_up_as_a_non_root_user_is_refused(node: LabNode) -> None:
    # The node's directory belongs to nobody, as it would for a user running it.
    os.chown(node.directory, NOBODY, NOBODY)
    for path in node.directory.iterdir():
        os.chown(path, NOBODY, NOBODY)
    os.chmod(node.directory.parent, 0o711)  # nobody may pass through the lab's temp dir
    line = assert_refused(node, _up(node, prefix=AS_NOBODY), "permission denied")
    assert "TUN" in line or "tun" in line, line
    assert not (node.directory / "control.sock").exists()


def test_status_without_a_running_node_is_one_line(node: LabNode) -> None:
    result = node.host.run(*p2pvpn_argv("status", "--dir", str(node.directory), "--json"), check=False)
    assert_refused(node, result, "no node is running")


def test_up_on_a_port_in_use_is_refused(node: LabNode) -> None:
    holder = node.host.popen(sys.executable, "-c", (
        "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('{node.address}', {node.port})); s.listen(1); print('bound', flush=True); time.sleep(60)"
    ), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        assert_refused(node, _up(node), "in use")
    finally:
        holder.kill()
        holder.wait(timeout=10)
