"""The node of ``up``/``relay`` runs in a process without typer, click, pydantic or rich (issue 16: RSS).

p2pvpn.node_process: the CLI validates, then execs ``python -m p2pvpn``
with the config in a memfd. Imports are per process, so each check runs in
a fresh interpreter (as tests/test_cli_imports.py does); the netns test
checks a real ``p2pvpn up`` from the outside.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from p2pvpn import config, node_process

REPO = Path(__file__).resolve().parents[1]
CLI_ONLY = ("typer", "click", "pydantic", "pydantic_core", "rich")


def _cli_only_loaded(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(CLI_ONLY)!r})))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd="/", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded: list[str] = json.loads(res.stdout.strip().splitlines()[-1])
    return loaded


def test_the_node_process_imports_no_cli_library() -> None:
    code = ("import p2pvpn.node_process, p2pvpn.node_signals, p2pvpn.node, p2pvpn.relay_node, p2pvpn.identity, "
            "p2pvpn.logs, p2pvpn.config")
    assert _cli_only_loaded(code) == []


def test_the_cli_does_import_them() -> None:  # the check above would see them
    assert set(_cli_only_loaded("import p2pvpn.cli")) >= {"typer", "rich"}


def test_main_py_reads_the_variable_that_hand_over_sets() -> None:
    assert f'"{node_process.ENV}"' in (REPO / "p2pvpn" / "__main__.py").read_text()


def test_a_handover_pickles_the_whole_config(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, listen=["/ip4/198.18.0.1/tcp/4001"], mtu=1300)
    handover = node_process.Handover("up", cfg, tmp_path, {"mtu": 1300}, "stderr", str(REPO / "p2pvpn"))
    assert pickle.loads(pickle.dumps(handover)) == handover


def test_no_handover_unless_started_as_p2pvpn(tmp_path: Path) -> None:
    """Called any other way (a test, an embedding program), the command runs its node in its own process."""
    assert node_process.allowed is False
    cfg = config.load(tmp_path)
    assert node_process.hand_over(node_process.Handover("up", cfg, tmp_path, {}, "stderr", "")) is None


def test_a_node_process_error_is_one_line_and_the_cli_exit_code(tmp_path: Path) -> None:
    """After the handover, a user error still ends as p2pvpn.cli.main ends it: one line, its exit code."""
    cfg = config.load(tmp_path)  # no identity.key in tmp_path: identity.load fails in the node process
    handover = node_process.Handover("up", cfg, tmp_path, {}, "stderr", str(REPO / "p2pvpn"))
    fd = os.memfd_create("test-handover", 0)
    os.write(fd, pickle.dumps(handover))
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, node_process.ENV: str(fd)}
        res = subprocess.run([sys.executable, "-m", "p2pvpn", "up", "--dir", str(tmp_path)], capture_output=True,
                             text=True, timeout=120, cwd=REPO, env=env, pass_fds=(fd,))
    finally:
        os.close(fd)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pvpn: error: ") and "identity.key" in lines[0], res.stderr
    # the CLI itself, for the same missing key (it checks before any handover): the same line and code
    cli = subprocess.run([sys.executable, "-m", "p2pvpn", "up", "--dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=REPO, env={k: v for k, v in env.items() if k != node_process.ENV})
    assert (res.returncode, res.stderr) == (cli.returncode, cli.stderr)
    assert res.returncode != 0


def test_pycryptodome_runs_on_ctypes() -> None:
    """No cffi/pycparser for pycryptodome (1.7 MiB; p2pvpn.libp2p_import.HIDDEN_WHILE); RSA keys still work."""
    code = ("import sys, p2pvpn.node\n"
            "from Crypto.Util import _raw_api\nfrom libp2p.crypto import rsa\n"
            "pair = rsa.create_new_key_pair(2048)\n"
            "assert pair.public_key.verify(b'data', pair.private_key.sign(b'data'))\n"
            "assert not pair.public_key.verify(b'other', pair.private_key.sign(b'data'))\n"
            "import cffi\n"  # hidden only while pycryptodome chose its backend
            "print(_raw_api.backend, 'pycparser' in sys.modules, cffi.FFI is not None)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["ctypes", "False", "True"]
