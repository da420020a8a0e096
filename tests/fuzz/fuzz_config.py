"""Fuzz target: the config loader, ``p2pvpn.config.load`` on an arbitrary ``config.toml``.

Input: the bytes of the file. Contract: ``load`` returns a ``Config`` or
raises ``ConfigError`` (a ``P2pvpnError``, which the CLI prints as one line
and exits non-zero); any other exception would reach the user as a
traceback, and is a crash. Properties: the error message is one line; a
loaded ``Config`` is a fixed point of validation, and the same values given
as flags (``p2pvpn up --mtu ...``) build the same ``Config``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from p2pvpn import config
from p2pvpn.errors import ConfigError, P2pvpnError

EXPECTED = (ConfigError, P2pvpnError)
MAX_LEN = 2048

_PEER = "12D3KooWK8JaMWM959PHZZv15CSbiaQH4bKoCNWd3JtnxwQUyyjL"
# Under the runner TMPDIR is the campaign's scratch directory (in /dev/shm where there is one), removed
# with it; libFuzzer exits without atexit handlers, which clean up only in-process (pytest) use.
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def seeds() -> list[bytes]:
    member = f"""
network = "lab"
listen = ["/ip4/0.0.0.0/tcp/4242", "/ip6/::/udp/4242/quic-v1"]
peers = ["/ip4/198.18.0.2/tcp/4242/p2p/{_PEER}"]
bootstrap = ["/dns4/boot.example/tcp/4242/p2p/{_PEER}"]
static_relays = ["/ip4/198.18.0.9/tcp/4242/p2p/{_PEER}"]
announce = ["/ip4/203.0.113.5/tcp/4242"]
allow_peers = ["{_PEER}"]
use_exit = "auto"
exit_via = "{_PEER}"
mtu = 1420
keepalive = 2.5
record_ttl = 600
log_level = "debug"
"""
    exit_node = """
exit = true
relay = true
exit_allow = ["0.0.0.0/0:80,443,8000-8999", "[2000::/3]"]
exit_deny = ["10.0.0.0/8", "[fc00::/7]:*"]
exit_capacity_mbit = 1000
relay_member_bytes = 9223372036854775807
[unknown_table]
x = { a = [1, 2.5, "s", true, 1979-05-27T07:32:00Z] }
"""
    # The template without its comments: every key with its default (1.3 kB, where the commented one is 4.6 kB).
    lines = (line.removeprefix("# ") for line in config.template().splitlines())
    keys = "\n".join(line for line in lines if line.partition(" = ")[0] in config.FIELDS)
    return [keys.encode(), member.encode(), exit_node.encode(), b"mtu = 100\n", b"mtu = \n"]


def one_input(data: bytes) -> None:
    (_DIR / config.CONFIG_FILE).write_bytes(data)
    try:
        cfg = config.load(_DIR)
    except P2pvpnError as error:
        assert len(str(error).splitlines()) == 1, f"not a one-line error: {str(error)!r}"
        return
    assert config.validate(cfg) == cfg
    assert config.build({}, {name: getattr(cfg, name) for name in config.FIELDS}) == cfg
