"""``p2pvpn policy set`` and ``policy show``: signed by the owner or an admin, numbered, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pvpn import identity
from p2pvpn.cli import app
from p2pvpn.errors import P2pvpnError
from p2pvpn.membership.store import Store
from p2pvpn.policy import store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        app(list(args), standalone_mode=False)
    except P2pvpnError as exc:
        capsys.readouterr()
        assert "\n" not in str(exc), str(exc)
        return exc.exit_code, str(exc)
    return 0, capsys.readouterr().out


def test_set_show_and_numbering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner, member = tmp_path / "owner", tmp_path / "member"
    assert run(capsys, "network", "create", "lab", "--dir", str(owner))[0] == 0
    nid = Store(owner).network()[0]
    code, text = run(capsys, "policy", "show", "--dir", str(owner))
    assert code == 0 and 'default = "allow"' in text and "no policy" in text
    rules = tmp_path / "p.toml"
    rules.write_text('default = "deny"\n\n[[rule]]\naction = "allow"\nfrom = "group:A"\nproto = "tcp"\n'
                     'ports = ["22", "8000-8100"]\n')
    code, text = run(capsys, "policy", "set", str(rules), "--dir", str(owner))
    assert (code, text.strip()) == (0, "policy 1 stored: default deny, 2 rules")
    assert run(capsys, "policy", "set", str(rules), "--dir", str(owner))[1].startswith("policy 2 stored")
    code, text = run(capsys, "policy", "show", "--dir", str(owner), "--json")
    shown = json.loads(text)
    assert shown["seq"] == 2 and shown["default"] == "deny" and shown["signer"] == "owner"
    assert [r["ports"] for r in shown["rules"]] == ["22", "8000-8100"] and shown["rules"][0]["from"] == "group:A"
    code, text = run(capsys, "policy", "show", "--dir", str(owner))
    assert text.startswith("# policy 2, signed by the owner") and 'ports = "8000-8100"' in text
    assert store.load(owner, nid).seq == 2  # type: ignore[union-attr]

    # A member that is no admin cannot sign.
    run(capsys, "init", "--dir", str(member))
    pid = str(identity.peer_id(identity.load(member / identity.KEY_FILE)))
    certificate = run(capsys, "admit", pid, "--dir", str(owner), "--name", "m")[1].strip()
    assert run(capsys, "join", certificate, "--dir", str(member), "--bootstrap",
               f"/ip4/198.18.0.1/tcp/4242/p2p/{pid}")[0] == 0
    code, text = run(capsys, "policy", "set", str(rules), "--dir", str(member))
    assert code != 0 and "not an admin" in text


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = tmp_path / "owner"
    run(capsys, "network", "create", "lab", "--dir", str(owner))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\naction = "allow"\nproto = "icmp"\nports = "22"\n')
    code, text = run(capsys, "policy", "set", str(bad), "--dir", str(owner))
    assert code != 0 and text == f'{bad}:4: rule 1: ports: ports need proto "tcp" or "udp"'
    code, text = run(capsys, "policy", "set", str(tmp_path / "missing.toml"), "--dir", str(owner))
    assert code != 0 and "cannot read" in text
    assert not store.path_of(owner).exists()
    code, text = run(capsys, "policy", "show", "--dir", str(tmp_path / "nowhere"))
    assert code != 0 and "in no network" in text
