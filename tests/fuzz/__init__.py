"""Coverage-guided fuzzing (atheris/libFuzzer) of every parser that takes hostile bytes.

One harness per target (``fuzz_<target>.py``), each exporting the same
small interface (see :mod:`tests.fuzz.run`); ``run.py`` runs them, one
subprocess per target. docs/fuzzing.md has the commands and the results.
"""
