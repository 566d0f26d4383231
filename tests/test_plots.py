"""PNG plots: each function writes a readable PNG (no display, no pyplot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewnorm.compare import RunResult, build_sweep, mean_curves, summarize
from fewnorm.plots import plot_accuracy, plot_curves, plot_probe
from fewnorm.probe import LayerStats

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


def test_accuracy_and_curves(tmp_path: Path) -> None:
    sweep = build_sweep(None, {}, norms=["bn", "gn", "swbn"])
    results = [
        RunResult("batchnorm", 0, "ok", "", (0.5, 0.7), 1, 0.1, ((100, 0.5), (200, 0.6))),
        RunResult("groupnorm", 0, "ok", "", (0.6, 0.8), 1, 0.1, ((100, 0.55), (200, 0.7))),
        RunResult("swbn", 0, "diverged", "nan at 3", (), 0, 0.0, ()),
    ]
    rows = summarize(sweep, results)
    plot_accuracy(rows, tmp_path / "a.png", baseline="batchnorm", title="t")
    plot_curves(mean_curves(results), tmp_path / "c.png", title="t")
    assert _is_png(tmp_path / "a.png") and _is_png(tmp_path / "c.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]  # no temporary files left


def test_probe_plot(tmp_path: Path) -> None:
    layers = [LayerStats(i, f"blocks.{i}", 1.0 / (i + 1), 0.1 * i, 3.0, 0.01 * (i + 1)) for i in range(4)]
    plot_probe({"batchnorm": layers, "layernorm": layers[::-1]}, tmp_path / "p.png", title="t")
    assert _is_png(tmp_path / "p.png")
