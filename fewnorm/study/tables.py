"""The report's tables as plain text cells, rendered by both reports (markdown and HTML) alike."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from fewnorm.metrics import Interval
from fewnorm.study.analysis import PROPERTIES, CellReport, Report
from fewnorm.study.stats import MIN_PAIRS


@dataclass(frozen=True)
class Table:
    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


def pct(interval: Interval | None, signed: bool = False) -> str:
    """``83.07 ± 1.14`` (percent), ``-`` when there is nothing."""
    if interval is None:
        return "-"
    mean = f"{100 * interval.mean:+.2f}" if signed else f"{100 * interval.mean:.2f}"
    return f"{mean} ± {100 * interval.ci95:.2f}"


def _number(value: float, digits: str = ".3g") -> str:
    return format(value, digits) if math.isfinite(value) else "-"


def cell_title(cell: CellReport) -> str:
    return f"{cell.algo}, {cell.ways}-way {cell.shots}-shot"


def results_table(cell: CellReport) -> Table:
    """Accuracy, paired difference, rank with its stability, cost: one row per normalizer."""
    rows = []
    for i, r in enumerate(cell.rows, 1):
        rank = "-" if r.rank is None else f"{r.rank.rank} [{r.rank.low}-{r.rank.high}]"
        best = "-" if r.rank is None else f"{100 * r.rank.p_best:.0f}%"
        diff = "baseline" if r.label == cell.baseline else pct(r.difference, signed=True)
        ms = "-" if not math.isfinite(r.ms_per_episode) else f"{r.ms_per_episode:.0f}"
        rows.append(
            (str(i), r.label, pct(r.accuracy), diff, rank, best, ms, _number(r.memory_mib, ".1f"), r.status)
        )
    notes = tuple(f"{r.label}: {r.message}" for r in cell.rows if r.status != "ok" and r.message)
    return Table(
        f"{cell_title(cell)}: test accuracy over {cell.seeds} seed(s) x {cell.test_episodes} shared test "
        f"episodes (95% t intervals); Δ paired by (seed, episode); rank 1 = best, [95% bootstrap "
        f"interval over seeds and episodes]; P(best) = bootstrap share ranked first",
        (
            "#",
            "normalizer",
            "accuracy %",
            f"Δ vs {cell.baseline} (pp)",
            "rank [95%]",
            "P(best)",
            "ms / episode",
            "step memory MiB",
            "status",
        ),
        tuple(rows),
        notes,
    )


def exposure_table(cell: CellReport) -> Table:
    rows = tuple((e.label, pct(e.together), pct(e.alone), pct(e.change, signed=True)) for e in cell.exposure)
    return Table(
        f"{cell_title(cell)}: transductive exposure, the same test episodes scored with the queries "
        "together and one query at a time",
        ("normalizer", "together %", "one at a time %", "change (pp)"),
        rows,
    )


def predictiveness_table(cell: CellReport) -> Table:
    rows = []
    for p in cell.predictiveness:
        c = p.correlation
        interval = "-" if math.isnan(c.low) else f"[{c.low:+.2f}, {c.high:+.2f}]"
        rows.append((p.prop, PROPERTIES[p.prop], _number(c.rho, "+.2f"), interval, str(c.n)))
    few = any(math.isnan(p.correlation.low) for p in cell.predictiveness)
    notes = (f"no interval with fewer than {MIN_PAIRS} normalizers",) if few else ()
    return Table(
        f"{cell_title(cell)}: Spearman rank correlation across normalizers between each property at "
        "initialization and final test accuracy (95% bootstrap interval over normalizers)",
        ("property", "measured as", "Spearman ρ", "95% interval", "normalizers"),
        tuple(rows),
        notes,
    )


def properties_table(cell: CellReport) -> Table:
    """The points of the scatter plots: each normalizer's properties and accuracy."""
    values: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}
    for p in cell.predictiveness:
        for label, x, y in p.points:
            values.setdefault(label, {})[p.prop] = x
            accuracy[label] = y
    rows = tuple(
        (label, *(_number(v.get(k, math.nan)) for k in PROPERTIES), f"{100 * accuracy[label]:.2f}")
        for label, v in values.items()
    )
    return Table(
        f"{cell_title(cell)}: properties at initialization", ("normalizer", *PROPERTIES, "accuracy %"), rows
    )


def reproduce_table(report: Report) -> Table:
    """The command, versions and each cell's settings, so that a reader can rerun any cell."""
    rows = [("command", report.command or "-")]
    if report.invoked:
        rows.append(("as typed", report.invoked))
    for cell in report.cells:  # a cell alone: the same spec, one algorithm and setting, elsewhere
        rows.append(
            (
                f"cell {cell.name} alone",
                f"fewnorm study {report.spec_file} --algos {cell.algo} --settings {cell.ways}w{cell.shots}s "
                f"--out {report.out}-{cell.name}",
            )
        )
    rows += [(f"version: {k}", str(v)) for k, v in report.versions.items()]
    rows.append(("spec", json.dumps(report.spec, sort_keys=True, default=str)))
    rows.append(("probe", f"ProtoNet loss on one training episode per seed, {report.probe_seeds} seed(s)"))
    for cell in report.cells:
        rows.append((f"cell {cell.name}", json.dumps(cell.settings, sort_keys=True, default=str)))
    return Table(
        "How to reproduce: the command, the versions and every cell's settings",
        ("what", "value"),
        tuple(rows),
    )
