"""A real ``p2pvpn up`` runs its node without typer, click, pydantic or rich (p2pvpn.node_process; issue 16).

Seen from outside: the pid the lab started is the node (the CLI exec'd,
same pid and command line), it answers and stops as before, and at exit
a sitecustomize on the nodes' PYTHONPATH lists the modules it had loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import MakeLab

CLI_ONLY = ("typer", "click", "pydantic", "pydantic_core", "rich")
# sitecustomize for the nodes: at exit, list the loaded modules in $P2PVPN_TEST_MODULES.<pid>.json
PROBE = """import atexit, json, os, sys
if os.environ.get("P2PVPN_TEST_MODULES"):
    atexit.register(lambda: open(f"{os.environ['P2PVPN_TEST_MODULES']}.{os.getpid()}.json", "w").write(
        json.dumps({"argv": sys.argv, "modules": sorted(sys.modules)})))
"""

pytestmark = pytest.mark.netns


def test_a_running_node_has_no_cli_library_and_keeps_its_pid_and_command_line(
    make_lab: MakeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sitecustomize.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("P2PVPN_TEST_MODULES", str(tmp_path / "modules"))
    lab = make_lab(nodes=2)
    node = lab.nodes[0]
    assert node.proc is not None
    cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-m" in cmdline and b"p2pvpn" in cmdline and b"up" in cmdline, cmdline  # the Popen'd pid is the node
    assert str(node.directory).encode() in cmdline, cmdline
    assert node.status()["peer_id"] == node.peer_id
    assert node.stop() == 0  # SIGTERM: a graceful stop, exit 0 as before
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("modules.*.json")]
    mine = [r for r in reports if r["argv"][1:2] == ["up"] and str(node.directory) in r["argv"]]
    assert len(mine) == 1, [r["argv"] for r in reports]  # one `up` ran to its end: the CLI was replaced
    modules = set(mine[0]["modules"])
    assert "p2pvpn.node" in modules and "p2pvpn.node_process" in modules
    assert not {m for m in modules if m.split(".")[0] in CLI_ONLY}, sorted(modules)
