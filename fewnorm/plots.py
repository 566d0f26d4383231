"""PNG plots of sweeps and probes (matplotlib, Agg; no pyplot, no display, atomic writes).

matplotlib is an optional dependency (``pip install 'fewnorm[plot]'``); it is
imported only when a plot is drawn.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewnorm.errors import FewnormError
from fewnorm.runs import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fewnorm.compare import Row


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FewnormError(
            "plots need matplotlib: pip install 'fewnorm[plot]' (or pass --no-plots)"
        ) from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _wrap(title: str, width: int = 70) -> str:
    return textwrap.fill(title, width)


def _save(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # the Agg canvas; no global backend state
    atomic_write_bytes(path, buffer.getvalue())


#: Colours of normalizers in sweep order (matplotlib's tab10): the same in every figure of a sweep.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: Markers and line styles cycled with the colours, so that overlapping lines stay visible.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


def norm_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, in the order given (a sweep's normalizer order)."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(dict.fromkeys(labels))}


def _style(i: int) -> dict[str, Any]:
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def plot_accuracy(
    rows: Sequence[Row],
    path: Path,
    *,
    baseline: str,
    title: str,
    colors: Mapping[str, str] | None = None,
    chance: float | None = None,
) -> None:
    """Two panels, one row per normalizer (best at the top):

    left, test accuracy as a dot with its 95% interval on an axis from chance (``chance``,
    a fraction; else 0) to 100%; right, the paired difference to ``baseline`` over the same
    (seed, episode) pairs with its 95% interval, in percentage points around a line at zero
    (filled dots: the interval excludes zero). Runs that failed are listed with their status.
    """
    colors = dict(colors or norm_colors([r.label for r in rows]))
    shown = [r for r in rows if r.accuracy is not None][::-1]
    failed = [r for r in rows if r.accuracy is None]
    labels = [f"{r.label} ({r.status})" for r in failed[::-1]] + [
        r.label if r.status == "ok" else f"{r.label} [{r.status}]" for r in shown
    ]
    offset = len(failed)
    fig = _figure(9.0, 1.6 + 0.42 * max(1, len(labels)))
    acc_ax, diff_ax = fig.subplots(1, 2, sharey=True, width_ratios=(1.0, 1.0))
    low = 100 * chance if chance is not None else 0.0
    for i, r in enumerate(shown):
        assert r.accuracy is not None
        y, color = offset + i, colors.get(r.label, PALETTE[0])
        mean, ci = 100 * r.accuracy.mean, 100 * r.accuracy.ci95
        acc_ax.errorbar(mean, y, xerr=ci, fmt="o", color=color, capsize=4, markersize=6)
        acc_ax.annotate(
            f"{mean:.1f} ± {ci:.1f}",
            (mean, y),
            xytext=(0, 7),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
        if r.label == baseline:
            diff_ax.plot(0, y, marker="o", color=color, markersize=6)
            diff_ax.annotate(
                "baseline", (0, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=7
            )
        elif r.difference is not None:
            d, dci = 100 * r.difference.mean, 100 * r.difference.ci95
            face = color if r.significant else "white"
            diff_ax.errorbar(
                d, y, xerr=dci, fmt="o", color=color, markerfacecolor=face, capsize=4, markersize=6
            )
            diff_ax.annotate(
                f"{d:+.1f} ± {dci:.1f}",
                (d, y),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    acc_ax.set_yticks(range(len(labels)), labels)
    acc_ax.set_ylim(-0.7, len(labels) - 0.3)
    acc_ax.set_xlim(low, 100)
    if chance is not None:
        acc_ax.axvline(low, color="0.4", linestyle=":", linewidth=1)
        acc_ax.annotate(
            f"chance {low:.0f}%",
            (low, len(labels) - 0.45),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=7,
        )
    acc_ax.set_xlabel("test accuracy (%), 95% interval over fixed episodes")
    acc_ax.grid(axis="x", alpha=0.3)
    diff_ax.axvline(0, color="0.3", linewidth=1)
    spans = [100 * (abs(r.difference.mean) + r.difference.ci95) for r in shown if r.difference is not None]
    reach = max([*spans, 1.0]) * 1.25
    diff_ax.set_xlim(-reach, reach)
    diff_ax.set_xlabel(f"paired difference to {baseline} (points), 95% interval")
    diff_ax.grid(axis="x", alpha=0.3)
    fig.suptitle(_wrap(title, 100), fontsize=10)
    _save(fig, path)


@dataclass(frozen=True)
class CurveBand:
    """Points ``(episode, mean, 95% half-width)`` of one curve; a half-width of 0: none known."""

    points: tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class Curves:
    """A normalizer's validation accuracy and training loss against training episodes."""

    accuracy: CurveBand
    loss: CurveBand


def plot_curves(
    curves: Mapping[str, Curves],
    path: Path,
    *,
    title: str,
    colors: Mapping[str, str] | None = None,
) -> None:
    """Validation accuracy (top) and training loss (bottom) against training episodes.

    One colour, marker and line style per normalizer (``colors``: the sweep's, shared with
    ``accuracy.png``); shaded bands are 95% intervals where the curves carry them.
    """
    colors = dict(colors or norm_colors(list(curves)))
    fig = _figure(7.5, 6.5)
    acc_ax, loss_ax = fig.subplots(2, 1, sharex=True)
    for i, (label, curve) in enumerate(curves.items()):
        color = colors.get(label, PALETTE[i % len(PALETTE)])
        for ax, band, scale in ((acc_ax, curve.accuracy, 100.0), (loss_ax, curve.loss, 1.0)):
            if not band.points:
                continue
            episodes, means, cis = zip(*band.points, strict=True)
            ys = [scale * m for m in means]
            ax.plot(episodes, ys, color=color, markersize=4, label=label, **_style(i))
            if any(cis):
                ax.fill_between(
                    episodes,
                    [y - scale * c for y, c in zip(ys, cis, strict=True)],
                    [y + scale * c for y, c in zip(ys, cis, strict=True)],
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                )
    acc_ax.set_ylabel("validation accuracy (%)")
    acc_ax.set_title(
        "validation accuracy; shaded: 95% interval (over seeds; one seed: over validation episodes)",
        fontsize=9,
    )
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("training loss (mean of the episodes since the last point)", fontsize=9)
    loss_ax.set_xlabel("training episode")
    from matplotlib.ticker import MaxNLocator

    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # episodes are whole
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    if curves:
        acc_ax.legend(fontsize=8)
    fig.suptitle(_wrap(title, 90), fontsize=10)
    _save(fig, path)


def run_curves(records: Sequence[Mapping[str, Any]]) -> Curves:
    """A single run's curves from its ``metrics.jsonl`` records: validation accuracy with the
    interval over the validation episodes, training loss (no interval)."""
    val = tuple(
        (int(r["episode"]), float(r["accuracy"]), float(r.get("ci95") or 0.0))
        for r in records
        if r.get("kind") == "val"
    )
    loss = tuple((int(r["episode"]), float(r["loss"]), 0.0) for r in records if r.get("kind") == "train")
    return Curves(CurveBand(val), CurveBand(loss))


def plot_run(run_dir: Path, *, title: str | None = None, label: str | None = None) -> Path | None:
    """Write ``run_dir/curves.png`` from its ``metrics.jsonl``; ``None`` without matplotlib or records."""
    import importlib.util
    import json

    if importlib.util.find_spec("matplotlib") is None:
        return None
    records = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    curves = run_curves(records)
    if not curves.accuracy.points and not curves.loss.points:
        return None
    path = run_dir / "curves.png"
    plot_curves({label or run_dir.name: curves}, path, title=title or str(run_dir.name))
    return path


#: Probe metrics in plotting order: (attribute, axis label, log scale).
PROBE_PANELS = (
    ("variance", "activation variance", True),
    ("cosine", "mean cosine similarity", False),
    ("stable_rank", "stable rank of samples", False),
    ("grad_norm", "gradient norm ||dL/dz||_F", True),
)


def plot_probe(
    series: Mapping[str, Sequence[Any]], path: Path, *, title: str, colors: Mapping[str, str] | None = None
) -> None:
    """The probe's four metrics against depth (layer 1..L), one line per normalizer.

    ``series`` maps a label to per-layer objects carrying the attributes of
    :data:`PROBE_PANELS` (:class:`fewnorm.probe.LayerStats`). Each normalizer has its own
    colour, marker and line style, and markers are hollow, so that equal values stay visible.
    """
    colors = dict(colors or norm_colors(list(series)))
    fig = _figure(10.0, 7.0)
    axes = fig.subplots(2, 2).flatten()
    for ax, (attr, name, log) in zip(axes, PROBE_PANELS, strict=True):
        for i, (label, layers) in enumerate(series.items()):
            values = [getattr(layer, attr) for layer in layers]
            ax.plot(
                range(1, len(values) + 1),
                values,
                color=colors.get(label, PALETTE[i % len(PALETTE)]),
                # drawn first = widest line and largest marker: equal series show as nested
                # shapes and stripes instead of one hiding the others
                markersize=max(4.0, 12.0 - 1.2 * i),
                markerfacecolor="none",
                markeredgewidth=1.4,
                linewidth=max(0.8, 3.4 - 0.4 * i),
                zorder=2 + i,
                label=label,
                **_style(i),
            )
        depth = max((len(layers) for layers in series.values()), default=0)
        ax.set_xticks(range(1, depth + 1))
        ax.set_xlabel("layer")
        ax.set_title(name, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(_wrap(title, 110), fontsize=11)
    _save(fig, path)
