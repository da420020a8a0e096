import tomllib
from pathlib import Path

import pytest

from p2pvpn import config
from p2pvpn.errors import ConfigError

PEER = "/ip4/198.18.0.2/tcp/4242/p2p/12D3KooWK8JaMWM959PHZZv15CSbiaQH4bKoCNWd3JtnxwQUyyjL"


def test_template_parses_back_to_defaults() -> None:
    assert config.build(tomllib.loads(config.template()), {}) == config.Config()


def test_flags_override_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('mtu = 1300\nnetwork = "lab"\n')
    cfg = config.load(tmp_path, mtu=1500, network=None, peers=[PEER])
    assert cfg.mtu == 1500 and cfg.network == "lab" and cfg.peers == (PEER,)
    pid, base = cfg.peer_infos()[0]
    assert str(pid) == PEER.rsplit("/", 1)[1] and str(base) == "/ip4/198.18.0.2/tcp/4242"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("bogus = 1", "unknown key 'bogus'"),
        ("mtu = 'big'", "mtu: expected an integer"),
        ("mtu = 100", "mtu: 100 is out of range"),
        ("peers = '/ip4/1.2.3.4/tcp/1'", "peers: expected a list"),
        ("peers = ['/ip4/1.2.3.4/tcp/1']", "must end in /p2p/<peer-id>"),
        ("peers = ['/ip4/1.2.3.4/tcp/1/p2p/notapeer']", "malformed multiaddr"),
        ("listen = ['nonsense']", "listen: malformed multiaddr"),
        ("listen = ['/ip4/1.2.3.4/udp/5']", "must be /ip4|ip6/<addr>/tcp/<port>"),
        ("tun = 'a/b'", "not a valid interface name"),
        ("network = ''", "network: ''"),
        ("allow_peers = ['xyz']", "invalid peer ID"),
        ("hole_punch = 1", "expected true or false"),
        ("allow_any_peer = true", "allow_any_peer was removed: list the peers that may connect in allow_peers"),
        ('trust_members = "yes"', "trust_members was removed: members are now the holders of a certificate"),
        ("log_level = 'loud'", "log_level"),
        ("mtu = ", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "config.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path) == config.Config()


def test_unreadable_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()  # unreadable as a file, even for root
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path)


RELAY_ID = "12D3KooWAaBCFNxkuConJB4kG2pvevNntG7MdXwAgMmzTGrVT8kC"
PEER_ID = "12D3KooWDp1bDuQmm8xcPr1oQqUMYGaMv3rNE6ujKUGZ8F3xiJ8H"


def test_a_relayed_peer_address_names_the_peer_not_the_relay() -> None:
    peer, base = config.split_peer_addr(f"/ip4/198.18.0.10/tcp/4242/p2p/{RELAY_ID}/p2p-circuit/p2p/{PEER_ID}")
    assert str(peer) == PEER_ID
    assert str(base) == f"/ip4/198.18.0.10/tcp/4242/p2p/{RELAY_ID}/p2p-circuit"


@pytest.mark.parametrize("text", [
    f"/ip4/198.18.0.10/tcp/4242/p2p/{RELAY_ID}/p2p-circuit",  # a relay's circuit address names no peer
    f"/p2p/{PEER_ID}",                                         # a peer but nowhere to dial it
    "/ip4/198.18.0.10/tcp/4242",
])
def test_static_relays_and_peers_must_end_in_a_peer_id(text: str) -> None:
    with pytest.raises(ConfigError, match="static_relays: .* must end in /p2p/<peer-id>"):
        config.validate(config.Config(static_relays=(text,)))


def test_config_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    """Found by tests/fuzz (config target): read_text raised UnicodeDecodeError, a traceback for the user."""
    (tmp_path / "config.toml").write_bytes(b"mtu = \xcf\xcf\xcf\xfa")
    with pytest.raises(ConfigError, match=r"config.toml: invalid TOML: not UTF-8 \(byte 6\)$"):
        config.load(tmp_path)


@pytest.mark.parametrize("value", ["[" * 600 + "]" * 600, "{a=" * 600 + "1" + "}" * 600])
def test_config_nested_too_deeply_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    """Found writing the config fuzz harness: tomllib's recursion has no limit of its own (RecursionError)."""
    (tmp_path / "config.toml").write_text(f"mtu = {value}\n")
    with pytest.raises(ConfigError, match="invalid TOML: arrays or tables nested too deeply$"):
        config.load(tmp_path)


@pytest.mark.parametrize("key", ["static_relays", "bootstrap", "peers", "announce", "listen"])
def test_multiaddr_errors_quoting_a_line_break_stay_one_line(tmp_path: Path, key: str) -> None:
    """Found by tests/fuzz (config target): the multiaddr library's message quotes the raw text, newline and all."""
    (tmp_path / "config.toml").write_text(f'{key} = ["/ip4/198.18.0.9/tcp/4242/p2p/12D3KooW\\n15CSbiaQ\\u2028x"]\n')
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    assert len(str(info.value).splitlines()) == 1 and "malformed multiaddr" in str(info.value)
