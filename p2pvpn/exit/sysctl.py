"""Kernel settings the exit role changes, put back exactly as found, also after a crash.

Before changing a setting we write its original value to a state file in
the node directory; stopping restores the originals and removes the file.
A node that finds the file on start was preceded by a crashed run: it
restores those originals first, so a crash never makes a changed value
look like the original.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from p2pvpn.exit.nft import ExitSetupError

log = logging.getLogger(__name__)

PROC_SYS = Path("/proc/sys")


def _path(name: str) -> Path:
    return PROC_SYS / name.replace(".", "/")


def read(name: str) -> str:
    try:
        return _path(name).read_text().strip()
    except OSError as exc:
        raise ExitSetupError(f"cannot read sysctl {name}: {exc.strerror}") from None


def write(name: str, value: str) -> None:
    try:
        _path(name).write_text(value)
    except OSError as exc:
        raise ExitSetupError(f"cannot set sysctl {name}={value}: {exc.strerror} (root needed)") from None


class SysctlChanges:
    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self._originals: dict[str, str] = {}

    def recover(self) -> bool:
        """Restore what a crashed run left changed; whether there was anything."""
        try:
            stale = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise ExitSetupError(f"unreadable state file {self.state_file}: {exc}") from None
        for name, value in stale.items():
            write(name, str(value))
        self.state_file.unlink()
        log.info("restored sysctls left changed by an earlier run: %s", stale)
        return True

    def apply(self, values: dict[str, str]) -> None:
        """Set ``values``, the originals saved first."""
        originals = {name: read(name) for name in values}
        self._originals.update({k: v for k, v in originals.items() if k not in self._originals})
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._originals))
        os.replace(tmp, self.state_file)
        for name, value in values.items():
            write(name, value)

    def restore(self) -> None:
        for name, value in self._originals.items():
            write(name, value)
        self._originals.clear()
        self.state_file.unlink(missing_ok=True)
