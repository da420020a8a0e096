"""The checked-in protobuf code matches every schema in proto/ (tunnel, membership, records, policy).

Runs the real scripts/gen-proto in a scratch copy of the repo, so both the
script and the committed output are checked: editing the .proto without
regenerating (or hand-editing tunnel_pb2.py) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed (pip install -e '.[test]')")

REPO = Path(__file__).resolve().parents[2]
GENERATED = (
    "wire/tunnel_pb2.py", "wire/tunnel_pb2.pyi", "membership/membership_pb2.py", "membership/membership_pb2.pyi",
    "discovery/records_pb2.py", "discovery/records_pb2.pyi", "policy/policy_pb2.py", "policy/policy_pb2.pyi",
)


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "gen-proto", tmp_path / "scripts" / "gen-proto")
    for package in {name.split("/")[0] for name in GENERATED}:
        (tmp_path / "p2pvpn" / package).mkdir(parents=True, exist_ok=True)
    # The script calls `python`; make that this interpreter, whatever PATH says.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: a symlinked venv python outside the venv loses the venv's site-packages.
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gen-proto")],
        cwd=tmp_path / "proto",  # the script must find its repo root itself
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    for name in GENERATED:
        fresh = (tmp_path / "p2pvpn" / name).read_bytes()
        checked_in = (REPO / "p2pvpn" / name).read_bytes()
        assert fresh == checked_in, f"p2pvpn/{name} is stale: run scripts/gen-proto"
