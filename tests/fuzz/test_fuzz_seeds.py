"""Every fuzz harness on its seeds and on the inputs that once crashed it, in-process and fast.

Keeps the harnesses honest between campaigns (a seed that no longer
encodes, a property that broke) and replays each regression input on
every test run, without libFuzzer.
"""

from __future__ import annotations

import pytest

from . import run


@pytest.mark.parametrize("target", run.TARGETS)
def test_harness_accepts_its_seeds_and_regressions(target: str) -> None:
    harness = run.harness(target)
    inputs = run.all_seeds(target)
    assert inputs, f"{target} has no seeds"
    for data in inputs:
        assert len(data) <= harness.MAX_LEN, f"a {target} seed is longer than MAX_LEN"
        harness.one_input(data)


def test_every_target_documents_its_failure_type() -> None:
    for target in run.TARGETS:
        harness = run.harness(target)
        assert isinstance(harness.EXPECTED, tuple) and all(issubclass(e, Exception) for e in harness.EXPECTED)


def test_the_output_parser_reads_libfuzzer_statistics() -> None:
    output = (
        "#20000\tDONE   cov: 139 ft: 460 corp: 67/2345b lim: 170 exec/s: 0 rss: 45Mb\n"
        "Done 20000 runs in 6 second(s)\n"
        "stat::number_of_executed_units: 20000\n"
        "stat::peak_rss_mb:              111\n"
    )
    result = run.parse_output("codec", 20000, 6.2, 0, output)
    assert (result.executed, result.coverage, result.features, result.corpus) == (20000, 139, 460, 67)
    assert result.ok and result.crash is None and result.peak_rss_mb == 111
    crashed = run.parse_output(
        "config", 20000, 1.0, 1,
        "=== Uncaught Python exception: ===\nTest unit written to /tmp/x/config-crash-4a6a\n"
        "stat::number_of_executed_units: 12\n",
    )  # fmt: skip
    assert crashed.crash == "/tmp/x/config-crash-4a6a" and crashed.executed == 12 and not crashed.ok
    short = run.parse_output("codec", 20000, 1.0, 0, "stat::number_of_executed_units: 19999\n")
    assert not short.ok, "fewer inputs than requested must not pass"
