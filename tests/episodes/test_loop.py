"""The training loop on a synthetic store: run files, best checkpoint, divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewnorm.config import RunConfig
from fewnorm.episodes import loop
from fewnorm.episodes.protonet import StepResult
from fewnorm.errors import TrainingDivergedError
from tests.episodes.test_sampler import make_store

CONFIG = RunConfig(
    norm="groupnorm", hidden=8, episodes=6, val_every=2, val_episodes=3, test_episodes=4,
    train_ways=5, train_queries=2, queries=3,
)  # fmt: skip


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))


def test_run_directory_and_best_checkpoint(tmp_path: Path) -> None:
    summary = loop.train(CONFIG, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if r["kind"] == "val"]
    assert [r["episode"] for r in vals] == [2, 4, 6]
    best = max(vals, key=lambda r: r["accuracy"])
    assert summary.best_val_accuracy == best["accuracy"]
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert checkpoint["episode"] == summary.best_val_episode == best["episode"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["test"]["episodes"] == 4
    assert len(saved["test_accuracies"]) == 4


def test_divergence_stops_with_step_and_normalizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewnorm.episodes.algorithms import ProtoNet

    calls = {"n": 0}
    real_step = ProtoNet.train_step

    def flaky(self: ProtoNet, model: torch.nn.Module, opt: torch.optim.Optimizer, eps: list) -> StepResult:
        calls["n"] += 1
        result = real_step(self, model, opt, eps)
        return StepResult(float("nan"), 0.0) if calls["n"] == 5 else result

    monkeypatch.setattr(ProtoNet, "train_step", flaky)
    with pytest.raises(TrainingDivergedError, match="episode 5 with normalizer 'groupnorm'"):
        loop.train(CONFIG, tmp_path / "run")
    assert (tmp_path / "run" / "best.pt").is_file()  # the last good checkpoint is kept
    assert not (tmp_path / "run" / "summary.json").exists()


def test_training_steps_see_the_schedules_learning_rate_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SWBN couples its whitening rate to the network's: the loop signals lr / initial lr per step."""
    from fewnorm.episodes.algorithms import ProtoNet
    from fewnorm.norms import current_learning_rate_scale

    scales: list[float] = []
    real_step = ProtoNet.train_step

    def spy(self: ProtoNet, model: torch.nn.Module, opt: torch.optim.Optimizer, eps: list) -> StepResult:
        scales.append(current_learning_rate_scale())
        return real_step(self, model, opt, eps)

    monkeypatch.setattr(ProtoNet, "train_step", spy)
    loop.train(CONFIG.model_copy(update={"lr_halve_every": 2}), tmp_path / "run")
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert current_learning_rate_scale() == 1.0  # outside a step
