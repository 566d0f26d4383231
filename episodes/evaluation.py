"""Re-scoring checkpoints on the fixed episodes; never changes the model it scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewnorm.allocator import keep_freed_memory
from fewnorm.collapse import diagnose, run_train_accuracy
from fewnorm.config import RunConfig, validate_config
from fewnorm.episode import EpisodeScorer
from fewnorm.episodes.loop import evaluate, resolve_device
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError
from fewnorm.metrics import Interval, mean_ci95
from fewnorm.runs import load_checkpoint


@dataclass(frozen=True)
class EvalResult:
    checkpoint: str
    config: dict[str, Any]
    split: str
    ways: int
    shots: int
    queries: int
    accuracy: Interval
    accuracies: list[float]
    collapse: dict[str, str] | None = None  # fewnorm.collapse.Collapse: the scores are at chance

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "dataset": self.config["dataset"],
            "split": self.split,
            "norm": self.config["norm"],
            "norm_options": self.config["norm_options"],
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "accuracy": self.accuracy.mean,
            "ci95": self.accuracy.ci95,
            "episodes": self.accuracy.n,
            "collapse": self.collapse,
        }


def check_counts(**counts: int | None) -> None:
    """Refuse a count that was given but is not positive (0 is not "the run's")."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be a positive number, got {value}")


def evaluate_checkpoint(
    path: Path,
    *,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    episodes: int | None = None,
    split: str = "test",
    data_root: Path | None = None,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
    scorer: Callable[[RunConfig], EpisodeScorer] | None = None,
) -> EvalResult:
    """Score the checkpoint at ``path`` on fixed ``split`` episodes (the run's settings by default).

    ``scorer(config)`` scores the episodes instead of the run's own algorithm (a fresh head
    per episode, :mod:`fewnorm.episodes.reinit_eval`).
    """
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got '{split}'")
    keep_freed_memory()  # speed only, as in train()
    state = load_checkpoint(path)
    config = RunConfig.model_validate(state["config"])
    if overrides:  # evaluation-time settings only (e.g. query_one_at_a_time, split_file)
        config = validate_config(config.model_dump() | overrides, "options")
    check_counts(ways=ways, shots=shots, queries=queries, episodes=episodes)
    ways = config.ways if ways is None else ways
    shots = config.shots if shots is None else shots
    queries = config.queries if queries is None else queries
    episodes = config.test_episodes if episodes is None else episodes
    plan = plan_run(config.model_copy(update={"data_root": str(data_root)}) if data_root else config)
    store = plan.split(split)
    sampler = EpisodeSampler(store, ways, shots, queries, split=split)
    dev = resolve_device(device)
    algorithm = plan.algorithm
    model = plan.build_model(store.image_shape[0]).to(dev)
    model.load_state_dict(state["model"])
    seed = config.test_seed if split == "test" else config.val_seed
    callback = on_stage(split, episodes) if on_stage else None
    accuracies = evaluate(
        scorer(config) if scorer else algorithm, model, sampler, episodes, seed, dev, callback
    )
    run_dir = path if path.is_dir() else path.parent
    collapse = diagnose(accuracies, ways, run_train_accuracy(run_dir), config.model_dump())
    return EvalResult(
        str(path),
        config.model_dump(),
        split,
        ways,
        shots,
        queries,
        mean_ci95(accuracies),
        accuracies,
        None if collapse is None else collapse.to_dict(),
    )
