"""Where a node's control socket lives: the node binds it, every CLI command finds it (no heavy imports here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pvpn.config import Config

RUN_DIR = Path("/run/p2pvpn")


def control_path(config: Config, directory: Path) -> Path:
    """``control_socket`` if set, else /run/p2pvpn/<dir name>-<hash of the absolute dir>.sock.

    Under /run (tmpfs, cleared at boot) rather than beside the config, so
    /etc stays read-only; the hash keeps two nodes with different --dir on
    one host (the lab, the tests) apart, and ``p2pvpn status --dir D``
    derives the same name from D. A non-root user may not write /run, so
    for one the socket stays in the node's own directory (<dir>/control.sock).
    """
    if config.control_socket:
        return Path(config.control_socket)
    return _run_path(directory) if os.geteuid() == 0 else directory / "control.sock"


def find_control_path(config: Config, directory: Path) -> Path:
    """Where a client finds the node of ``directory``: root may ask a node that runs as another user."""
    if config.control_socket:
        return Path(config.control_socket)
    for candidate in (_run_path(directory), directory / "control.sock"):
        if candidate.exists():
            return candidate
    return control_path(config, directory)


def _run_path(directory: Path) -> Path:
    absolute = directory.resolve()
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in absolute.name)[:40] or "node"
    return RUN_DIR / f"{name}-{digest}.sock"
