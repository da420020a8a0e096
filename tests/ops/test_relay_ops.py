"""`p2pvpn down` and `reload` against a relay (p2pvpn.relay_node): in process with real libp2p hosts
(a reservation survives a reload that changes the limits), and as a real `p2pvpn relay` process on loopback
(`down --dir` ends it cleanly, `reload` and SIGHUP re-read config.toml, a malformed file changes nothing)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn import identity
from p2pvpn.config import Config, validate
from p2pvpn.control import client
from p2pvpn.errors import ControlError
from p2pvpn.host import Host
from p2pvpn.nat import circuit as c
from p2pvpn.node import control_path
from p2pvpn.relay_node import RelayNode
from p2pvpn.testing.cluster import free_port

TIMEOUT = 60.0


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


async def test_reload_applies_new_limits_keeps_the_reservation_and_down_closes_everything(tmp_path: Path) -> None:
    directory = tmp_path / "relay"
    directory.mkdir()
    key = identity.create(directory / identity.KEY_FILE)
    port = free_port()
    cfg = validate(Config(listen=(f"/ip4/127.0.0.1/tcp/{port}",), dht="server", relay=True))
    relay = RelayNode(cfg, key, directory)
    relay.start_overrides = {"listen": list(cfg.listen), "dht": "server", "relay": True}  # as `p2pvpn relay` sets them
    member = Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"])
    stranger = Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"])
    path = control_path(cfg, directory)
    async with member.running(), stranger.running(), trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        assert relay.relay is not None and relay.host is not None
        relay_info = PeerInfo(relay.peer_id, relay.host.listen_addrs)
        with trio.fail_after(20):
            await member.libp2p.connect(relay_info)
            await c.reserve(member, relay.peer_id)  # a stranger to this relay, served: serve_strangers is on
        assert member.peer_id in relay.relay.policy.slots

        assert not relay.host.is_member(stranger.peer_id)
        (directory / "config.toml").write_text(
            f'bootstrap = ["{stranger.listen_addrs[0]}/p2p/{stranger.peer_id}"]\n'
            'relay_serve_strangers = false\nrelay_max_circuits = 7\nmtu = 1300\n')
        reply = await trio.to_thread.run_sync(client.request, path, "reload")
        assert reply == {"reloaded": True, "role": "relay",
                         "changed": ["bootstrap", "relay_max_circuits", "relay_serve_strangers"],
                         "reservations_kept": 1, "restart_needed": ["mtu"]}
        assert relay.host.is_member(stranger.peer_id)  # a bootstrap peer now: spared the strangers' limits
        assert relay.discovery is not None and [p for p, _ in relay.discovery.bootstrap_peers] == [stranger.peer_id]
        limits = relay.relay.status()["limits"]
        assert limits["max_circuits"] == 7 and limits["serve_strangers"] is False
        assert member.peer_id in relay.relay.policy.slots  # kept
        with trio.fail_after(20):  # the new limits apply to the next reservation
            await stranger.libp2p.connect(relay_info)
            with pytest.raises(c.CircuitError) as refused:
                await c.reserve(stranger, relay.peer_id)
        assert refused.value.status == c.PERMISSION_DENIED

        (directory / "config.toml").write_text("relay_max_circuits = 0\n")  # out of range: nothing changes
        with pytest.raises(ControlError, match="reload refused, running configuration kept"):
            await trio.to_thread.run_sync(client.request, path, "reload")
        assert relay.relay.status()["limits"]["max_circuits"] == 7

        reply = await trio.to_thread.run_sync(client.request, path, "down")
        assert reply == {"stopping": True, "role": "relay", "peer_id": str(relay.peer_id)}
        with trio.fail_after(10):  # relay.run returns by itself: this nursery ends without a cancel
            await _until(lambda: not path.exists())
        await _until(lambda: relay.peer_id not in member.connected_peers())
    assert _port_free(port)  # the listener is gone too


def _port_free(port: int) -> bool:
    """No listener on ``port`` (connections the relay closed may still sit in TIME_WAIT: SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen(1)
        except OSError:
            return False
    return True


# -- a real `p2pvpn relay` process ---------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PVPN")}
    return subprocess.run([sys.executable, "-m", "p2pvpn", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          check=False, env=env)


def _wait(check, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.2) + 1):  # bounded in count and time
        if check():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return False


class RelayProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory.parent / "relay.log"

    def __enter__(self) -> RelayProcess:
        self.directory.mkdir(exist_ok=True)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "p2pvpn", "relay", "--dir", str(self.directory),
                 "--listen", f"/ip4/127.0.0.1/tcp/{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items()
                                                           if not k.startswith("P2PVPN")})
        assert _wait(lambda: self.status() is not None, TIMEOUT), self.text()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, object] | None:
        result = _cli("status", "--dir", str(self.directory), "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    def limits(self) -> dict[str, object]:
        status = self.status()
        assert status is not None, self.text()
        return status["relay"]["limits"]  # type: ignore[index,no-any-return]


def test_a_relay_process_reloads_its_config_and_down_ends_it_cleanly(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        config_toml = relay.directory / "config.toml"
        config_toml.write_text("relay_max_circuits = 7\n")
        result = _cli("reload", "--dir", str(relay.directory))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "reloaded: relay_max_circuits changed, 0 reservation(s) kept"
        assert relay.limits()["max_circuits"] == 7

        config_toml.write_text("relay_max_circuits = 7\nrelay_serve_strangers = false\nmtu = 1300\n")
        relay.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: relay.limits()["serve_strangers"] is False), relay.text()
        assert "mtu changed; that takes effect at the next start" in relay.text()

        config_toml.write_text("relay_max_circuits = [\n")
        result = _cli("reload", "--dir", str(relay.directory))  # the command reads it too: one line, nothing sent
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("p2pvpn: error: ") and "invalid TOML" in result.stderr, result.stderr
        relay.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "reload refused, running configuration kept" in relay.text()), relay.text()
        config_toml.write_text("relay_max_circuits = 7\n")  # `status` reads config.toml too
        assert relay.limits()["serve_strangers"] is False and relay.proc.poll() is None  # nothing changed
        pid = relay.status()["peer_id"]  # type: ignore[index]
        result = _cli("down", "--dir", str(relay.directory))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f"stopped relay {pid}"
        assert relay.proc.wait(15) == 0, relay.text()
        assert f"relay {pid} stopped" in relay.text()
        assert _cli("status", "--dir", str(relay.directory)).returncode == 1  # the control socket is gone
        assert _port_free(relay.port)


def test_sigterm_stops_a_relay_process_gracefully(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay") as relay:
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(15) == 0, relay.text()
        text = relay.text()
        assert "SIGTERM received, shutting down" in text and "stopping: 0 circuit(s)" in text and " stopped" in text
        assert "Traceback" not in text
