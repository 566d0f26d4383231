"""Reptile and Baseline++ runs resume bit-identically, as ProtoNet and MAML runs do (test_resume.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fewnorm.config import RunConfig
from fewnorm.episodes import loop
from fewnorm.runs import run_status
from tests.episodes.test_sampler import make_store

SMALL = {"hidden": 8, "episodes": 7, "val_every": 2, "val_episodes": 3, "test_episodes": 4, "queries": 3}
CONFIGS = {
    "reptile": RunConfig(
        algo="reptile", meta_batch=2, inner_steps=2, inner_batch=3, inner_steps_test=2, train_shots=2,
        train_queries=2, **SMALL,
    ),
    "baseline-pp": RunConfig(algo="baseline-pp", batch_size=8, inner_steps_test=5, **SMALL),
}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))


def _numbers(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    for varying in ("wall_seconds", "train_seconds_per_episode", "run_dir"):
        summary.pop(varying)
    return summary


def _stop_at(episode: int) -> Any:
    def on_episode(log: loop.EpisodeLog) -> None:
        if log.episode == episode:
            raise KeyboardInterrupt

    return on_episode


@pytest.mark.parametrize("algo", list(CONFIGS))
def test_interrupted_run_resumes_bit_identically(algo: str, tmp_path: Path) -> None:
    config = CONFIGS[algo]
    reference = loop.train(config, tmp_path / "reference")
    assert reference.config["algo"] == algo
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted):
        loop.train(config, run, on_episode=_stop_at(3))
    assert run_status(run) == "interrupted"
    loop.train(config, run, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == (tmp_path / "reference" / "metrics.jsonl").read_bytes()
    assert _numbers(run) == _numbers(tmp_path / "reference")


def test_baseline_records_its_classes_in_the_run(tmp_path: Path) -> None:
    summary = loop.train(CONFIGS["baseline-pp"], tmp_path / "run")
    assert summary.config["pretrain_classes"] == 12  # make_store's classes
    assert summary.config["norm_options"] == {"mode": "running"}
