"""The systemd units: checked by systemd itself where systemd-analyze exists, and statically always.

`systemd-analyze verify` runs offline (no running systemd needed) and
complains about unknown keys, bad values and a missing ExecStart binary;
we point ExecStart at this checkout's p2pvpn for it. `security --offline`
scores the hardening; the threshold keeps it from eroding. The static
checks hold on any machine: the flags in ExecStart are flags of the
command, the node's directory is writable, the TUN is reachable, and no
setting hides what the node must write (/proc/sys for the exit roles).
"""

from __future__ import annotations

import shutil
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from p2pvpn.cli import app

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
NODE = UNITS / "p2pvpn.service"
RELAY = UNITS / "p2pvpn-relay.service"
EXPOSURE_MAX = 35  # systemd-analyze's 0..100 scale (shown as 0.0..10.0); the node unit scores 26 today


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat, as SystemCallFilter does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}: stray line {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _up_flags() -> set[str]:
    command = typer.main.get_command(app).commands["up"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_node_unit_runs_up_with_real_flags_and_can_do_its_job() -> None:
    unit = parse(NODE)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"][0])
    assert argv[0].endswith("/p2pvpn") and argv[1] == "up", argv
    flags = {a for a in argv[2:] if a.startswith("--")}
    assert flags <= _up_flags(), flags - _up_flags()
    directory = argv[argv.index("--dir") + 1]
    assert directory in service["ReadWritePaths"], "the node writes its directory (state files, membership)"
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    caps = set(service["CapabilityBoundingSet"][0].split())
    assert "CAP_NET_ADMIN" in caps and not caps & {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_DAC_OVERRIDE"}, caps
    assert service["DeviceAllow"] == ["/dev/net/tun rw"] and service["DevicePolicy"] == ["closed"]
    assert service.get("PrivateDevices", ["no"]) == ["no"], "PrivateDevices hides /dev/net/tun"
    assert service.get("ProtectKernelTunables", ["no"]) == ["no"], "the exit roles write /proc/sys/net"
    assert "ProcSubset" not in service, "ProcSubset=pid hides /proc/sys"
    assert "AF_NETLINK" in service["RestrictAddressFamilies"][0]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["RuntimeDirectory"] == ["p2pvpn"], "the control socket lives in /run/p2pvpn"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def _with_this_p2pvpn(unit: Path, tmp_path: Path) -> Path:
    """A copy whose ExecStart is this checkout's p2pvpn (verify checks that the binary exists)."""
    exe = Path(sys.executable).with_name("p2pvpn")
    if not exe.exists():
        pytest.skip(f"no p2pvpn script beside {sys.executable} (install with pip install -e .)")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/p2pvpn", str(exe)))
    return copy


@pytest.mark.parametrize("unit", [NODE, RELAY], ids=["node", "relay"])
def test_systemd_analyze_verifies_the_unit_and_scores_its_hardening(unit: Path, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd); the static checks still ran")
    copy = _with_this_p2pvpn(unit, tmp_path)
    verify = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run([tool, "security", "--offline=yes", f"--threshold={EXPOSURE_MAX}", str(copy)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert security.returncode == 0, security.stdout[-400:] + security.stderr
    print(security.stdout.strip().splitlines()[-1])


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo in a value and an unknown key are reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    copy = _with_this_p2pvpn(NODE, tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt") + "Bogus=1\n")
    verify = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert "strikt" in verify.stderr and "Bogus" in verify.stderr, verify.stderr
