"""From a study's raw results (``study.json``) to the tables and points its reports show.

Per cell (an algorithm at one ways/shots setting) and normalizer: accuracy over every
(seed, test episode) with its t interval, the paired difference to the baseline, the rank
with its bootstrap interval, the cost; the exposure to transduction (queries scored
together against one at a time, paired by episode); and, per property at
initialization, the Spearman correlation across normalizers with final accuracy.

Only normalizers whose every seed finished without collapsing to chance are ranked and
correlated: a collapse (:mod:`fewnorm.collapse`) is a failure to train, not a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fewnorm.metrics import Interval
from fewnorm.study.stats import (
    Correlation,
    RankInterval,
    bootstrap_ranks,
    paired_t,
    spearman_bootstrap,
    t_interval,
)

#: Properties at initialization (from the probe's per-layer statistics) the study correlates.
PROPERTIES: dict[str, str] = {
    "variance growth": "activation variance, last normalization layer over first",
    "cosine similarity": "mean cosine similarity between samples, last normalization layer",
    "stable rank": "stable rank of the samples, last normalization layer",
    "gradient growth": "gradient norm, first normalization layer over last",
}


def properties(layers: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The four properties of one probe (its layers in order, as :class:`fewnorm.probe.LayerStats`)."""
    first, last = layers[0], layers[-1]

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    return {
        "variance growth": ratio(last["variance"], first["variance"]),
        "cosine similarity": last["cosine"],
        "stable rank": last["stable_rank"],
        "gradient growth": ratio(first["grad_norm"], last["grad_norm"]),
    }


@dataclass(frozen=True)
class NormRow:
    label: str
    norm: str
    status: str  # ok | collapsed | diverged | failed | missing, with "(k/n seeds)" when partial
    seeds: int  # finished seeds
    accuracy: Interval | None
    difference: Interval | None  # paired, to the cell's baseline
    rank: RankInterval | None
    ms_per_episode: float
    memory_mib: float
    message: str = ""


@dataclass(frozen=True)
class Exposure:
    """Test accuracy with the queries together against one at a time (the same episodes)."""

    label: str
    together: Interval
    alone: Interval
    change: Interval  # alone - together, paired by (seed, episode)


@dataclass(frozen=True)
class Predictiveness:
    prop: str
    correlation: Correlation
    points: tuple[tuple[str, float, float], ...]  # (label, property at init, mean accuracy)


@dataclass(frozen=True)
class CellReport:
    name: str
    algo: str
    ways: int
    shots: int
    baseline: str
    rows: tuple[NormRow, ...]
    exposure: tuple[Exposure, ...]
    predictiveness: tuple[Predictiveness, ...]
    settings: dict[str, Any]
    seeds: int
    test_episodes: int


def _status(runs: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in runs if r["status"] != "ok"]
    collapsed = [r for r in runs if r["status"] == "ok" and r.get("collapse")]
    if not runs:
        return "missing"
    worst = bad or collapsed
    if not worst:
        return "ok"
    kind = bad[0]["status"] if bad else "collapsed"
    return kind if len(worst) == len(runs) else f"{kind} ({len(worst)}/{len(runs)} seeds)"


def analyse_cell(cell: Mapping[str, Any], probes: Sequence[Mapping[str, Any]], seed: int = 0) -> CellReport:
    """The report of one cell of ``study.json`` (``probes``: the study's probe records)."""
    by_label: dict[str, list[Mapping[str, Any]]] = {}
    for run in cell["runs"]:
        by_label.setdefault(run["label"], []).append(run)

    def paired(label: str, key: str = "test_accuracies") -> dict[tuple[int, int], float]:
        return {
            (r["seed"], i): a
            for r in by_label.get(label, [])
            if r["status"] == "ok"
            for i, a in enumerate(r.get(key) or ())
        }

    baseline = paired(cell["baseline"])
    clean = [n["label"] for n in cell["norms"] if _status(by_label.get(n["label"], [])) == "ok"]
    ranks = (
        bootstrap_ranks(
            {
                k: np.array([r["test_accuracies"] for r in sorted(by_label[k], key=lambda r: r["seed"])])
                for k in clean
            },
            seed=seed,
        )
        if len({len(r["test_accuracies"]) for k in clean for r in by_label[k]}) == 1
        else {}
    )
    rows, exposure = [], []
    for norm in cell["norms"]:
        label = norm["label"]
        runs = by_label.get(label, [])
        ok = [r for r in runs if r["status"] == "ok"]
        accs = [a for r in ok for a in r["test_accuracies"]]
        status = _status(runs)
        message = next(
            (
                r.get("message") or r.get("collapse") or ""
                for r in runs
                if r["status"] != "ok" or r.get("collapse")
            ),
            "",
        )
        seconds = [r["seconds_per_episode"] for r in ok if math.isfinite(r["seconds_per_episode"])]
        rows.append(
            NormRow(
                label,
                norm["norm"],
                status,
                len(ok),
                t_interval(accs) if accs else None,
                None if label == cell["baseline"] else paired_t(paired(label), baseline),
                ranks.get(label),
                1e3 * math.fsum(seconds) / len(seconds) if seconds else math.nan,
                cell["memory_bytes"].get(label, math.nan) / 2**20,
                message,
            )
        )
        alone = paired(label, "one_at_a_time")
        if alone:
            together = {k: v for k, v in paired(label).items() if k in alone}
            change = paired_t(alone, together)
            if change is not None:
                exposure.append(
                    Exposure(
                        label, t_interval(list(together.values())), t_interval(list(alone.values())), change
                    )
                )
    rows.sort(key=lambda r: (r.status != "ok", -(r.accuracy.mean if r.accuracy else -1.0)))
    return CellReport(
        cell["name"],
        cell["algo"],
        cell["ways"],
        cell["shots"],
        cell["baseline"],
        tuple(rows),
        tuple(exposure),
        _predictiveness(cell, rows, probes, seed),
        cell["settings"],
        len(cell["settings"]["seeds"]),
        max((len(r["test_accuracies"]) for r in cell["runs"]), default=0),
    )


def _predictiveness(
    cell: Mapping[str, Any], rows: Sequence[NormRow], probes: Sequence[Mapping[str, Any]], seed: int
) -> tuple[Predictiveness, ...]:
    """Per property, Spearman's rho across the cell's clean normalizers with its bootstrap interval."""
    found = {}
    for norm in cell["norms"]:
        probe = next(
            (
                p
                for p in probes
                if p["backbone"] == cell["backbone"]
                and p["norm"] == norm["norm"]
                and p["options"] == norm["options"]
            ),
            None,
        )
        if probe is not None:
            found[norm["label"]] = properties(probe["layers"])
    usable = [r for r in rows if r.status == "ok" and r.accuracy is not None and r.label in found]
    out = []
    for prop in PROPERTIES:
        points = tuple(
            (r.label, found[r.label][prop], r.accuracy.mean)
            for r in usable
            if math.isfinite(found[r.label][prop]) and r.accuracy is not None
        )
        correlation = spearman_bootstrap([p[1] for p in points], [p[2] for p in points], seed=seed)
        out.append(Predictiveness(prop, correlation, points))
    return tuple(out)


@dataclass(frozen=True)
class Report:
    cells: tuple[CellReport, ...]
    command: str
    invoked: str
    spec_file: str
    out: str
    versions: dict[str, Any]
    spec: dict[str, Any]
    probe_seeds: int


def analyse(raw: Mapping[str, Any]) -> Report:
    """Every cell of a study's raw results."""
    cells = tuple(analyse_cell(c, raw["probes"]) for c in raw["cells"])
    return Report(
        cells,
        raw.get("command", ""),
        raw.get("invoked", ""),
        raw.get("spec_file", ""),
        raw.get("out", ""),
        dict(raw.get("versions", {})),
        dict(raw.get("spec", {})),
        int(raw.get("probe_seeds", 0)),
    )
