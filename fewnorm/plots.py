"""PNG plots of sweeps and probes (matplotlib, Agg; no pyplot, no display, atomic writes).

matplotlib is an optional dependency (``pip install 'fewnorm[plot]'``); it is
imported only when a plot is drawn.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
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


def plot_accuracy(rows: Sequence[Row], path: Path, *, baseline: str, title: str) -> None:
    """Test accuracy with its 95% interval per normalizer, best at the top; baseline dashed."""
    shown = [r for r in rows if r.accuracy is not None][::-1]
    failed = [r for r in rows if r.accuracy is None]
    fig = _figure(7.0, 1.2 + 0.45 * (len(shown) + len(failed)))
    ax = fig.add_subplot()
    y = list(range(len(shown)))
    means = [100 * r.accuracy.mean for r in shown if r.accuracy]
    errors = [100 * r.accuracy.ci95 for r in shown if r.accuracy]
    colors = ["tab:orange" if r.label == baseline else "tab:blue" for r in shown]
    ax.barh(y, means, xerr=errors, color=colors, alpha=0.8, capsize=4, height=0.6)
    for i, r in enumerate(shown):
        note = "" if r.status == "ok" else f"  [{r.status}]"
        ax.text(means[i] + errors[i] + 0.3, i, f"{means[i]:.1f}{note}", va="center", fontsize=8)
    base = next((r.accuracy for r in shown if r.label == baseline and r.accuracy), None)
    if base is not None:
        ax.axvline(100 * base.mean, color="tab:orange", linestyle="--", linewidth=1)
    labels = [r.label for r in shown] + [f"{r.label} ({r.status})" for r in failed]
    ax.set_yticks(range(len(labels)), labels)
    low = min([m - e for m, e in zip(means, errors, strict=True)] or [0.0])
    ax.set_xlim(max(0.0, math.floor(low - 5)), 100)
    ax.set_xlabel("test accuracy (%), 95% interval over fixed episodes")
    ax.set_title(_wrap(title), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, *, title: str) -> None:
    """Validation accuracy against training episodes, one line per normalizer."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    for label, points in curves.items():
        if points:
            episodes, accs = zip(*points, strict=True)
            ax.plot(episodes, [100 * a for a in accs], marker="o", markersize=3, label=label)
    ax.set_xlabel("training episode")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(_wrap(title), fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    _save(fig, path)


#: Probe metrics in plotting order: (attribute, axis label, log scale).
PROBE_PANELS = (
    ("variance", "activation variance", True),
    ("cosine", "mean cosine similarity", False),
    ("stable_rank", "stable rank of samples", False),
    ("grad_norm", "gradient norm ||dL/dz||_F", True),
)


def plot_probe(series: Mapping[str, Sequence[Any]], path: Path, *, title: str) -> None:
    """The probe's four metrics against depth (layer 1..L), one line per normalizer.

    ``series`` maps a label to per-layer objects carrying the attributes of
    :data:`PROBE_PANELS` (:class:`fewnorm.probe.LayerStats`).
    """
    fig = _figure(10.0, 7.0)
    axes = fig.subplots(2, 2).flatten()
    for ax, (attr, name, log) in zip(axes, PROBE_PANELS, strict=True):
        for label, layers in series.items():
            values = [getattr(layer, attr) for layer in layers]
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
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
