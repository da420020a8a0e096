"""A CLI command that talks to the control socket or reads files imports no node machinery (start-up time).

Every ``p2pvpn status`` used to import all of py-libp2p, trio and the node
(~1 s of CPU); docs/performance.md, "Start-up". Imports are per process, so
each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What only `up`/`relay` (and `join`, which dials) need.
NODE_ONLY = ("trio", "p2pvpn.rtnl", "p2pvpn.node", "p2pvpn.host", "libp2p.host.basic_host", "libp2p.network.swarm",
             "libp2p.kad_dht", "aioquic", "dns")


def _loaded_after(code: str, tmp_path: Path) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {list(NODE_ONLY)!r} if m in sys.modules]))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded: list[str] = json.loads(res.stdout.strip().splitlines()[-1])
    return loaded


def test_finding_the_control_socket_imports_no_node_machinery(tmp_path: Path) -> None:
    code = (f"from pathlib import Path\nimport p2pvpn.cli as cli\n"
            f"print(cli._control_path(Path({str(tmp_path)!r})))")  # fmt: skip
    assert _loaded_after(code, tmp_path) == []


def test_the_id_command_imports_no_node_machinery(tmp_path: Path) -> None:
    code = (f"import sys\nfrom p2pvpn import cli\n"
            f"sys.argv = ['p2pvpn', 'init', '--dir', {str(tmp_path)!r}]\n"
            f"try:\n    cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"sys.argv = ['p2pvpn', 'id', '--dir', {str(tmp_path)!r}]\n"
            f"try:\n    cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")  # fmt: skip
    assert _loaded_after(code, tmp_path) == []
