"""Hook the TUN into systemd-resolved: per-link DNS server and ``~zone`` routing domain, undone on exit.

With it, ``alpha.lab.internal`` resolves on the host through resolved's
stub (127.0.0.53) and only names under the zone go to our responder
(``default-route false``: other queries never reach it). Without
resolvectl or a running resolved, or from a network namespace other than
PID 1's (resolved would configure the host's link of that index, not
ours), the hook logs once at info and does nothing; the README says what
to do by hand then. The commands are built sans-IO (``setup_commands``,
``undo_commands``); ``apply`` runs them, each bounded in time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

RESOLVED_RUN_DIR = Path("/run/systemd/resolve")
COMMAND_TIMEOUT = 5.0


def setup_commands(resolvectl: str, link: str, servers: Sequence[str], zones: Sequence[str]) -> list[list[str]]:
    """resolvectl calls giving ``link`` our DNS servers, the routing-only domains ``~zone``, no default route."""
    return [
        [resolvectl, "dns", link, *servers],
        [resolvectl, "domain", link, *(f"~{zone.rstrip('.')}" for zone in zones)],
        [resolvectl, "default-route", link, "false"],
    ]


def undo_commands(resolvectl: str, link: str) -> list[list[str]]:
    return [[resolvectl, "revert", link]]


def absent_reason(which: str | None, run_dir: Path = RESOLVED_RUN_DIR, own_netns: str | None = None,
                  init_netns: str | None = None) -> str | None:
    """Why the hook cannot work here, or None when it can (the arguments are what the caller found)."""
    if which is None:
        return "resolvectl is not installed"
    if not run_dir.is_dir():
        return f"systemd-resolved is not running ({run_dir} is missing)"
    if own_netns is not None and init_netns is not None and own_netns != init_netns:
        return "the node runs in a network namespace that systemd-resolved does not see"
    return None


def _netns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class ResolvedHook:
    """``install`` on start, ``remove`` on the way out; both no-ops when resolved is absent."""

    def __init__(self, link: str, servers: Sequence[str], zones: Sequence[str], enabled: bool = True) -> None:
        self.link, self.servers, self.zones = link, list(servers), [z.rstrip(".") for z in zones]
        self.resolvectl = shutil.which("resolvectl")
        self.reason = "disabled in the configuration (dns_resolved = false)" if not enabled else \
            absent_reason(self.resolvectl, RESOLVED_RUN_DIR, _netns("self"), _netns("1"))
        self.installed = False

    def install(self) -> None:
        if self.reason is not None:
            log.info("systemd-resolved hook off: %s; to resolve names under %s, point a resolver at %s "
                     "(README: Names, ping and netcheck)", self.reason, " and ".join(self.zones),
                     " or ".join(self.servers))
            return
        assert self.resolvectl is not None
        if self._run(setup_commands(self.resolvectl, self.link, self.servers, self.zones)):
            self.installed = True
            log.info("systemd-resolved: %s answers %s on %s", ", ".join(self.servers), " ".join(self.zones),
                     self.link)

    def remove(self) -> None:
        if self.installed and self.resolvectl is not None:
            self._run(undo_commands(self.resolvectl, self.link))
            self.installed = False

    def _run(self, commands: list[list[str]]) -> bool:
        for command in commands:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("systemd-resolved: %s failed: %s", " ".join(command), exc)
                return False
            if done.returncode != 0:
                log.warning("systemd-resolved: %s failed: %s", " ".join(command),
                            (done.stderr or done.stdout).strip().splitlines()[-1:] or done.returncode)
                return False
        return True

    def status(self) -> dict[str, object]:
        return {"installed": self.installed, "reason": self.reason}
