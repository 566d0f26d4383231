"""Collapse to chance: constructed runs are flagged with their cause; real results are not."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from fewnorm.collapse import diagnose, last_train_accuracy
from fewnorm.compare import NormEntry, PlannedRun, Sweep, read_run, summarize
from fewnorm.episodes.protonet import protonet_evaluate
from fewnorm.episodes.sampler import EpisodeSampler
from tests.episodes.test_sampler import make_store

MAML_SWBN = {"algo": "maml", "norm": "swbn", "norm_options": {"mode": "running"}, "buffer_policy": None}


class _Constant(nn.Module):
    """An embedding that maps every image to the same point: every query lands in one class."""

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, 4)
        return torch.zeros(x.shape[0], 4) + 0.0 * x.flatten(1)[:, :4]


def test_a_constant_predictor_is_flagged_as_one_class() -> None:
    sampler = EpisodeSampler(make_store(classes=10, per_class=20, size=8), ways=5, shots=1, queries=3)
    accuracies = [protonet_evaluate(_Constant(), sampler.fixed(i, 0)) for i in range(20)]
    assert all(abs(a - 0.2) < 1e-6 for a in accuracies)
    found = diagnose(accuracies, 5, None, {"algo": "protonet", "norm": "groupnorm"})
    assert found is not None and "predicts one class" in found.reason


def test_near_chance_after_learning_names_the_running_mode_under_maml() -> None:
    found = diagnose([0.28, 0.26, 0.27, 0.29], 5, 1.0, MAML_SWBN)
    assert found is not None
    assert "within 10% of chance" in found.reason and "training accuracy is 100.0%" in found.reason
    assert "running mode under maml" in found.cause and "mode=transductive" in found.advice


def test_global_buffers_are_named_as_the_cause() -> None:
    config = MAML_SWBN | {"norm_options": {"mode": "transductive"}, "buffer_policy": "global"}
    found = diagnose([0.2] * 10, 5, 1.0, config)
    assert found is not None and "global buffers" in found.cause


def test_below_chance_is_said_as_such_and_old_runs_get_their_factory_mode() -> None:
    found = diagnose([0.05, 0.1, 0.08], 5, 0.9, {"algo": "maml", "norm": "swbn", "norm_options": {}})
    assert found is not None and "below chance" in found.reason
    assert "running mode under maml" in found.cause  # recorded no mode: ran swbn's factory default


def test_a_few_episodes_at_chance_are_not_called_one_class() -> None:
    assert diagnose([0.2] * 3, 5, None, MAML_SWBN) is None


def test_a_maml_run_without_batch_statistics_points_at_the_test_time_inner_loop() -> None:
    config = {
        "algo": "maml",
        "norm": "patchnorm",
        "norm_options": {},
        "inner_steps_test": 10,
        "inner_lr": 0.4,
    }
    found = diagnose([0.2] * 12, 5, 0.62, config)
    assert found is not None and "test-time inner loop (10 steps at lr 0.4)" in found.cause
    assert "--inner-steps-test 1" in found.advice


def test_real_results_are_not_flagged() -> None:
    assert diagnose([0.9, 0.85, 0.95], 5, 1.0, MAML_SWBN) is None
    assert diagnose([0.40, 0.38, 0.39], 5, 0.9, MAML_SWBN) is None  # weak (layernorm-like), not chance
    assert diagnose([0.25, 0.22, 0.27], 5, 0.3, MAML_SWBN) is None  # nothing learned, nothing lost
    assert diagnose([], 5, 1.0, MAML_SWBN) is None


def test_last_train_accuracy_reads_the_last_training_record() -> None:
    records = [{"kind": "train", "accuracy": 0.5}, {"kind": "val", "accuracy": 0.1}]
    records += [{"kind": "train", "accuracy": 0.75}, {"kind": "val", "accuracy": 0.2}]
    assert last_train_accuracy(records) == 0.75
    assert last_train_accuracy([]) is None


def _finished(run_dir: Path, accuracies: list[float], train: float, config: dict) -> None:
    run_dir.mkdir(parents=True)
    summary = {"test_accuracies": accuracies, "parameters": 1, "train_seconds_per_episode": 0.1}
    (run_dir / "summary.json").write_text(json.dumps(summary | {"config": config | {"ways": 5}}))
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "episode": 1, "loss": 1.0, "accuracy": train})
    )


def test_compare_ranks_collapsed_rows_last_and_says_why(tmp_path: Path) -> None:
    entries = (NormEntry("batchnorm", "batchnorm"), NormEntry("swbn", "swbn"))
    sweep = Sweep(base={"algo": "maml"}, norms=entries, seeds=(0,), baseline="batchnorm")
    # swbn: an older summary without a "collapse" key, diagnosed when read back
    _finished(tmp_path / "swbn-seed0", [0.2] * 30, 1.0, MAML_SWBN)
    _finished(tmp_path / "batchnorm-seed0", [0.15] * 30, 0.3, {"algo": "maml", "norm": "batchnorm"})
    results = [read_run(tmp_path / f"{e.label}-seed0", PlannedRun(e.label, 0, {})) for e in entries]
    rows = summarize(sweep, results)
    assert [r.label for r in rows] == ["batchnorm", "swbn"]  # 20% does not outrank 15% as a finding
    assert rows[1].status == "collapsed" and "running mode under maml" in rows[1].message
    assert rows[0].status == "ok"


def test_the_summary_says_collapsed_with_cause_and_advice() -> None:
    from fewnorm.cli.render import summary_table
    from fewnorm.config import RunConfig
    from fewnorm.episodes.loop import RunSummary
    from fewnorm.metrics import mean_ci95

    found = diagnose([0.2] * 12, 5, 1.0, MAML_SWBN)
    assert found is not None
    config = RunConfig(algo="maml", norm="swbn", norm_options={"mode": "running"}).model_dump()
    summary = RunSummary(
        config, 0.3, 10, mean_ci95([0.2] * 12), 1, 1.0, 0.1, "r", [0.2] * 12, found.to_dict()
    )
    assert summary.to_dict()["collapse"]["advice"].startswith("--norm-opt mode=transductive")
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "COLLAPSED" in text and "likely cause: swbn in running mode under maml" in text


def test_evaluate_marks_a_checkpoint_that_scores_chance(tmp_path: Path) -> None:
    import pytest

    from fewnorm.config import RunConfig
    from fewnorm.episodes import evaluation, loop

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
        mp.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
        config = RunConfig(
            norm="groupnorm", hidden=8, episodes=2, val_every=2, val_episodes=2, test_episodes=2, train_ways=5
        )
        loop.train(config, tmp_path / "run")
        mp.setattr(evaluation, "evaluate", lambda *args, **kwargs: [0.2] * 12)
        result = evaluation.evaluate_checkpoint(tmp_path / "run")
    finally:
        mp.undo()
    assert result.collapse is not None and "predicts one class" in result.collapse["reason"]
    assert result.to_dict()["collapse"] == result.collapse
