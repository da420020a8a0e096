"""Running a command as an unprivileged user, for tests of what a non-root user sees."""

from __future__ import annotations

NOBODY = 65534
# A real unprivileged user: uid/gid nobody, no groups, and of all capabilities only
# CAP_DAC_READ_SEARCH, so it can read an interpreter installed under /root (pyenv) but
# can neither create a TUN nor write where root did not let it.
AS_NOBODY = (
    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
    "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search", "--",
)  # fmt: skip
