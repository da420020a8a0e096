"""Small pieces the benchmark scripts under bench/ share: a process's cost, and bounded arguments."""

from __future__ import annotations

import argparse
import os
from typing import Any


def proc_stat(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds: user + system) of one process, from /proc."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bounded(kind: type, low: float, high: float) -> Any:
    """An argparse ``type``: ``kind(text)`` within ``low..high``, else a one-line usage error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value

    return parse
