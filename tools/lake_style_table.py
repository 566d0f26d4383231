"""Lake-style errors of several runs against a baseline, paired on the same runs.

Usage::

    python tools/lake_style_table.py BASELINE.json[+SEED2.json...] LABEL=OTHER.json ...

Each JSON is ``fewnorm evaluate RUN --benchmark lake-style --json`` output; a baseline of
several files joined by ``+`` (training seeds) is their per-run mean error. Prints one
Markdown row per file: its mean error with the 95% interval over runs, and its change
against the baseline with the 95% interval of the paired per-run differences (both files
must score the same runs: same fold, seed and count). The intervals cover the draw of runs,
not the training seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fewnorm.metrics import mean_ci95


def _errors(data: dict[str, Any]) -> list[float]:
    return [float(r["error"]) for r in data["runs"]]


def _mean(runs: list[dict[str, Any]]) -> float:
    return sum(float(r["error"]) for r in runs) / len(runs)


def main(argv: list[str]) -> int:
    """Print the table; a non-zero exit and one line when the files do not pair."""
    if len(argv) < 1:
        print("usage: lake_style_table.py BASELINE.json [LABEL=OTHER.json ...]", file=sys.stderr)
        return 2
    entries = [a.split("=", 1) if "=" in a else (a, a) for a in argv[1:]]
    seeds = [json.loads(Path(path).read_text()) for path in argv[0].split("+")]
    per_run = zip(*(s["runs"] for s in seeds), strict=True)  # each: one run's entry in every seed
    base = seeds[0] | {"runs": [rs[0] | {"error": _mean(list(rs))} for rs in per_run]}
    label = "baseline" if len(seeds) == 1 else f"baseline (mean of {len(seeds)} seeds)"
    loaded = [(label, base), *((lbl, json.loads(Path(path).read_text())) for lbl, path in entries)]
    print("| ingredient | lake-style error (95% CI) | change vs baseline (paired 95% CI) |")
    print("|---|---|---|")
    for label, data in loaded:
        if [r["run"] for r in data["runs"]] != [r["run"] for r in base["runs"]]:
            print(f"error: {label} was scored on other runs than the baseline", file=sys.stderr)
            return 2
        mine = mean_ci95(_errors(data))
        diff = mean_ci95([a - b for a, b in zip(_errors(data), _errors(base), strict=True)])
        change = "—" if data is base else f"{diff.mean:+.2f} ± {diff.ci95:.2f}"
        print(f"| {label} | {mine.mean:.2f} ± {mine.ci95:.2f} | {change} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
