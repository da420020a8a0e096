"""The short fuzz campaign CI runs: every target for SHORT_RUNS inputs under atheris.

Each target runs in its own subprocess (python -m tests.fuzz.run), seeded
with its test vectors and past crash inputs; libFuzzer picks a fresh random
seed each time, so every CI run explores a little further. The test fails
on any crash, and also unless libFuzzer reports having executed exactly the
requested number of inputs: a harness that exits early must not pass.
docs/fuzzing.md has the long campaign (1,000,000 inputs per target).
"""

from __future__ import annotations

import pytest

from . import run

SHORT_RUNS = 20_000


@pytest.mark.parametrize("target", run.TARGETS)
def test_short_campaign(target: str) -> None:
    result = run.campaign(target, SHORT_RUNS, timeout=300)
    assert result.crash is None and result.returncode == 0, (
        f"fuzz target {target} crashed (input kept at {result.crash}); replay it with "
        f"'python -m tests.fuzz.run --child {target} {result.crash}':\n{run.crash_excerpt(result.output)}"
    )
    assert result.executed == SHORT_RUNS, f"libFuzzer ran {result.executed} of {SHORT_RUNS} inputs:\n{result.output[-2000:]}"
    assert result.coverage, "no coverage feedback: the target's packages were not instrumented"
