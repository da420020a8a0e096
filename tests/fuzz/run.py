"""Run the fuzz campaigns: each target in its own subprocess, under atheris (libFuzzer).

Usage, from the repository root::

    python -m tests.fuzz.run --target all --runs 1000000
    python -m tests.fuzz.run --target codec --target config --runs 20000 --corpus fuzz-corpus

Each target is a module ``tests/fuzz/fuzz_<target>.py`` exporting:

* ``one_input(data: bytes) -> None``: the harness. It returns for an input
  the target accepts or refuses with its documented error; anything else
  escaping it (another exception, a failed property assertion) is a crash.
* ``EXPECTED``: the documented failure types, for the docs and the reader.
* ``MAX_LEN``: the largest input libFuzzer generates.
* ``seeds() -> list[bytes]``: real encodings to start from (test vectors).

Inputs that once crashed a target live in ``regressions/<target>/`` and
join its seeds. The parent process writes the seeds to a temporary
directory, starts ``python -m tests.fuzz.run --child <target> <libFuzzer
flags> <corpus> <seeds>``, and reads libFuzzer's final statistics from its
stderr: inputs executed, coverage, and the crash file if there was one.
Nothing here asserts timing; the CI test (test_fuzz_short.py) asserts only
that every requested input ran and none crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

INSTRUMENT: dict[str, tuple[str, ...]] = {
    "codec": ("p2pvpn",),
    "offload": ("p2pvpn",),
    "icmp": ("p2pvpn",),
    "record": ("p2pvpn", "multiaddr"),
    "policy": ("p2pvpn",),
    "config": ("p2pvpn", "tomllib", "multiaddr"),
    "cert": ("p2pvpn",),
    "invite": ("p2pvpn", "multiaddr"),
    "revocation": ("p2pvpn",),
}
"""Per target, the top-level packages whose Python code gets coverage feedback
(atheris instruments whole top-level packages, imported in the child after this)."""
TARGETS = tuple(INSTRUMENT)
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REGRESSIONS = HERE / "regressions"
INPUT_TIMEOUT = 10
"""Seconds one input may take before libFuzzer reports it as a hang (every target is bounded)."""


def harness(target: str) -> ModuleType:
    """The harness module of ``target`` (imported as part of this package)."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r} (known: {', '.join(TARGETS)})")
    return importlib.import_module(f"{__package__}.fuzz_{target}")


def regression_inputs(target: str) -> list[bytes]:
    directory = REGRESSIONS / target
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()] if directory.is_dir() else []


def all_seeds(target: str) -> list[bytes]:
    return harness(target).seeds() + regression_inputs(target)


@dataclass(frozen=True)
class Result:
    """One campaign's outcome, read from libFuzzer's output."""

    target: str
    requested: int
    executed: int | None
    seconds: float
    coverage: int | None
    features: int | None
    corpus: int | None
    peak_rss_mb: int | None
    crash: str | None
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.crash is None and self.executed == self.requested

    @property
    def exec_per_s(self) -> float:
        return (self.executed or 0) / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> str:
        status = "ok" if self.ok else ("CRASH " + (self.crash or f"exit {self.returncode}"))
        return (
            f"{self.target:<10} {self.executed or 0:>10} {self.seconds:>8.1f} {self.exec_per_s:>8.0f} "
            f"{0 if self.crash is None else 1:>7} {self.coverage or 0:>5} {self.features or 0:>6} "
            f"{self.corpus or 0:>6}  {status}"
        )


HEADER = f"{'target':<10} {'inputs':>10} {'time_s':>8} {'exec/s':>8} {'crashes':>7} {'cov':>5} {'ft':>6} {'corpus':>6}  status"


def _last_int(pattern: str, text: str) -> int | None:
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    return int(matches[-1]) if matches else None


def parse_output(target: str, requested: int, seconds: float, returncode: int, output: str) -> Result:
    """Read libFuzzer's ``-print_final_stats`` block and its status lines."""
    crash_files = re.findall(r"Test unit written to (\S+)", output)
    crashed = bool(crash_files) or "Uncaught Python exception" in output or "ERROR: libFuzzer" in output
    return Result(
        target=target,
        requested=requested,
        executed=_last_int(r"^stat::number_of_executed_units:\s+(\d+)", output),
        seconds=seconds,
        coverage=_last_int(r"\bcov: (\d+)", output),
        features=_last_int(r"\bft: (\d+)", output),
        corpus=_last_int(r"\bcorp: (\d+)/", output),
        peak_rss_mb=_last_int(r"^stat::peak_rss_mb:\s+(\d+)", output),
        crash=(crash_files[-1] if crash_files else "(no file)") if crashed else None,
        returncode=returncode,
        output=output,
    )


def campaign(
    target: str,
    runs: int,
    *,
    corpus: Path | None = None,
    artifacts: Path | None = None,
    seed: int | None = None,
    nice: int = 0,
    timeout: float | None = None,
    log_dir: Path | None = None,
) -> Result:
    """Fuzz ``target`` for exactly ``runs`` inputs in a subprocess; crash files go to ``artifacts``."""
    harness(target)  # fail early on a bad name
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-", dir=_scratch_root()) as tmp:
        seeds_dir = Path(tmp) / "seeds"
        seeds_dir.mkdir()
        for data in all_seeds(target):
            (seeds_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
        work = corpus if corpus is not None else Path(tmp) / "corpus"
        work.mkdir(parents=True, exist_ok=True)
        crash_dir = artifacts if artifacts is not None else Path(tmp) / "artifacts"
        crash_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *(["nice", "-n", str(nice)] if nice else []),
            sys.executable, "-m", "tests.fuzz.run", "--child", target,  # from REPO, whatever pytest named us
            f"-runs={runs}", f"-max_len={harness(target).MAX_LEN}", f"-timeout={INPUT_TIMEOUT}",
            "-print_final_stats=1", f"-artifact_prefix={crash_dir}/{target}-",
            *([f"-seed={seed}"] if seed is not None else []),
            str(work), str(seeds_dir),
        ]  # fmt: skip
        log_path = (log_dir if log_dir is not None else Path(tmp)) / f"{target}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log_path.open("w") as log:  # a file, not a pipe: a long campaign can be watched with tail -f
            # libFuzzer ends the child without running atexit handlers: what a harness puts in TMPDIR
            # is removed with this directory.
            env = {**os.environ, "TMPDIR": tmp}
            proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        seconds = time.monotonic() - started
        output = log_path.read_text(errors="replace")
        result = parse_output(target, runs, seconds, proc.returncode, output)
        if result.crash is not None and artifacts is None:
            # Keep the evidence: move the temporary crash files somewhere that outlives this call.
            kept = Path(tempfile.mkdtemp(prefix=f"fuzz-crash-{target}-"))
            for path in crash_dir.iterdir():
                shutil.move(str(path), kept / path.name)
            result = parse_output(target, runs, seconds, proc.returncode,
                                  result.output.replace(str(crash_dir), str(kept)))
        return result


def _scratch_root() -> str | None:
    """/dev/shm where there is one: a file write in /tmp costs ~1 ms on the project machine, more than a parse."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _child(target: str, libfuzzer_args: list[str]) -> None:
    """Inside the subprocess: import the harness with its packages instrumented, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENT[target])):
        module = harness(target)
    atheris.Setup([sys.argv[0], *libfuzzer_args], module.one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", choices=(*TARGETS, "all"), help="target to fuzz (repeatable)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target (libFuzzer -runs)")
    parser.add_argument("--corpus", type=Path, help="keep each target's corpus in CORPUS/<target> (default: a temp dir)")
    parser.add_argument("--artifacts", type=Path, help="write crash inputs here (default: a kept temp dir on crash)")
    parser.add_argument("--seed", type=int, help="libFuzzer random seed, for a repeatable run")
    parser.add_argument("--log", type=Path, help="write each target's libFuzzer output to LOG/<target>.log")
    parser.add_argument("--nice", type=int, default=0, help="run the fuzzer under nice -n NICE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        _child(args.child, rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    targets = TARGETS if not args.target or "all" in args.target else tuple(dict.fromkeys(args.target))
    print(HEADER, flush=True)
    failed = 0
    for target in targets:
        result = campaign(
            target, args.runs, corpus=args.corpus / target if args.corpus else None,
            artifacts=args.artifacts, seed=args.seed, nice=args.nice, log_dir=args.log,
        )  # fmt: skip
        print(result.row(), flush=True)
        if not result.ok:
            failed += 1
            print(crash_excerpt(result.output), file=sys.stderr)
    return 1 if failed else 0


def crash_excerpt(output: str) -> str:
    """The part of libFuzzer's output that explains a failure (the Python traceback), or its tail."""
    start = output.find("=== Uncaught Python exception")
    return output[start : start + 4000] if start >= 0 else output[-4000:]


if __name__ == "__main__":
    sys.exit(main())
