"""A before/after of bench/latency.py in one run: the two variants alternate, pair after pair.

Why: on a shared machine the load moves by a factor of several within
minutes, so two separate runs compare two machines. Alternating runs of
"after" (as is) and "before" (``--before`` arguments added, by default
``--no-direct``: the TUN reader's direct datagram send off) see the same
load drift (in ABBA order), and each pair gives one ratio. Each run starts
fresh nodes.

    python bench/latency_ab.py [--pairs 6] [--count 500] [--rounds 5] [--before --no-direct] [--json]

Prints, per pair: the load average before it, each variant's added RTT
(min / median / p99) and the after/before ratio of the added medians;
then the median and range over the pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

LATENCY = Path(__file__).resolve().parent / "latency.py"
RUN_TIMEOUT = 600.0


def run(count: int, rounds: int, extra: list[str]) -> dict[str, Any]:
    """One bench/latency.py run; its JSON, or {"error": ...}."""
    argv = [sys.executable, str(LATENCY), "--count", str(count), "--rounds", str(rounds), "--json", *extra]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {RUN_TIMEOUT:g} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["exit %d" % res.returncode])[-1][:300]}
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="--no-direct", help="bench/latency.py arguments of the before runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.pairs <= 50:
        parser.error("--pairs 1..50")
    before_args = shlex.split(args.before)
    pairs: list[dict[str, Any]] = []
    for i in range(args.pairs):
        load = os.getloadavg()[0]
        if i % 2 == 0:  # ABBA: neither variant always runs first
            after = run(args.count, args.rounds, [])
            before = run(args.count, args.rounds, before_args)
        else:
            before = run(args.count, args.rounds, before_args)
            after = run(args.count, args.rounds, [])
        pair: dict[str, Any] = {"load": round(load, 1), "after": after, "before": before}
        if "error" not in after and "error" not in before:
            pair["ratio_median"] = round(after["added_ms"]["median_ms"] / before["added_ms"]["median_ms"], 3)
        pairs.append(pair)
        if not args.json:
            print(_line(i + 1, pair), flush=True)
    ratios = [p["ratio_median"] for p in pairs if "ratio_median" in p]
    summary = {"pairs": len(ratios), "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
               "ratio_range": [min(ratios), max(ratios)] if ratios else None}  # fmt: skip
    for side in ("after", "before"):
        medians = [p[side]["added_ms"]["median_ms"] for p in pairs if "added_ms" in p[side]]
        summary[f"{side}_added_median_ms"] = round(statistics.median(medians), 3) if medians else None
    if args.json:
        print(json.dumps({"runs": pairs, "summary": summary}, indent=2))
    else:
        print(f"over {summary['pairs']} pairs: added median after {summary['after_added_median_ms']} ms, "
              f"before {summary['before_added_median_ms']} ms; after/before {summary['ratio_median']} "
              f"(range {summary['ratio_range']})")  # fmt: skip
    return 0 if ratios else 1


def _line(i: int, pair: dict[str, Any]) -> str:
    parts = [f"pair {i} load {pair['load']:5.1f}"]
    for side in ("after", "before"):
        res = pair[side]
        if "error" in res:
            parts.append(f"{side}: {res['error']}")
        else:
            d = res["added_ms"]
            parts.append(f"{side} added min/median/p99 {d['min_ms']:.3f}/{d['median_ms']:.3f}/{d['p99_ms']:.2f} ms")
    if "ratio_median" in pair:
        parts.append(f"ratio {pair['ratio_median']:.2f}")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
