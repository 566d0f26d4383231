"""PNG plots: each function writes a readable PNG (no display, no pyplot)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from fewnorm.compare import RunResult, build_sweep, summarize, sweep_curves
from fewnorm.plots import (
    CurveBand,
    Curves,
    norm_colors,
    plot_accuracy,
    plot_curves,
    plot_probe,
    plot_run,
    run_curves,
)
from fewnorm.probe import LayerStats

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


def _results(seeds: int = 2) -> list[RunResult]:
    """Four normalizers on 200 paired episodes: groupnorm ~ +3 points, swbn diverged."""
    rng = random.Random(0)
    out = []
    for label, level in (("batchnorm", 0.88), ("groupnorm", 0.91), ("instancenorm", 0.80)):
        for seed in range(seeds):
            accs = tuple(min(1.0, max(0.0, level + rng.gauss(0, 0.08))) for _ in range(200))
            curve = tuple((e, level - 0.3 / (1 + e / 100) + rng.gauss(0, 0.01)) for e in (100, 200, 300))
            losses = tuple((e, 1.5 / (1 + e / 60) + rng.gauss(0, 0.02)) for e in range(50, 301, 50))
            out.append(RunResult(label, seed, "ok", "", accs, 1, 0.1, curve, (0.02, 0.018, 0.015), losses))
    out.append(RunResult("swbn", 0, "diverged", "nan at 3", (), 0, 0.0, ()))
    return out


def test_accuracy_and_curves(tmp_path: Path) -> None:
    sweep = build_sweep(None, {}, norms=["bn", "gn", "in", "swbn"], seeds=2)
    results = _results()
    rows = summarize(sweep, results)
    colors = norm_colors([e.label for e in sweep.norms])
    plot_accuracy(rows, tmp_path / "a.png", baseline="batchnorm", title="t", colors=colors, chance=0.2)
    plot_curves(sweep_curves(results), tmp_path / "c.png", title="t", colors=colors)
    assert _is_png(tmp_path / "a.png") and _is_png(tmp_path / "c.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.png"]  # no temporary files left


def test_sweep_curves_carry_intervals_and_the_loss() -> None:
    curves = sweep_curves(_results(seeds=2))
    gn = curves["groupnorm"]
    assert [p[0] for p in gn.accuracy.points] == [100, 200, 300]
    assert all(ci > 0 for _, _, ci in gn.accuracy.points)  # Student-t over the two seeds
    assert len(gn.loss.points) == 6 and all(ci > 0 for _, _, ci in gn.loss.points)
    one = sweep_curves(_results(seeds=1))["groupnorm"]
    assert [ci for _, _, ci in one.accuracy.points] == [0.02, 0.018, 0.015]  # the run's own interval
    assert all(ci == 0 for _, _, ci in one.loss.points)


def test_colors_follow_the_sweep_order() -> None:
    colors = norm_colors(["batchnorm", "groupnorm", "swbn"])
    assert len(set(colors.values())) == 3
    assert norm_colors(["batchnorm", "groupnorm"])["groupnorm"] == colors["groupnorm"]


def test_probe_plot(tmp_path: Path) -> None:
    layers = [LayerStats(i, f"blocks.{i}", 1.0 / (i + 1), 0.1 * i, 3.0, 0.01 * (i + 1)) for i in range(4)]
    plot_probe({"batchnorm": layers, "layernorm": layers[::-1]}, tmp_path / "p.png", title="t")
    assert _is_png(tmp_path / "p.png")


def test_a_single_run_writes_its_curves(tmp_path: Path) -> None:
    records = [{"kind": "train", "episode": e, "loss": 1.0 / e, "accuracy": 0.5} for e in (50, 100)]
    records.append({"kind": "val", "episode": 100, "accuracy": 0.8, "ci95": 0.03})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curves = run_curves(records)
    assert curves == Curves(CurveBand(((100, 0.8, 0.03),)), CurveBand(((50, 0.02, 0.0), (100, 0.01, 0.0))))
    assert plot_run(tmp_path, title="t", label="batchnorm") == tmp_path / "curves.png"
    assert _is_png(tmp_path / "curves.png")
    assert plot_run(tmp_path / "empty") is None  # nothing recorded: no figure
