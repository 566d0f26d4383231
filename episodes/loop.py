"""Meta-training, validation on fixed episodes, best checkpoint, and the final test.

The loop only orchestrates: the algorithm lives in pure step functions
(:mod:`fewnorm.episodes.algorithms`), the files in :mod:`fewnorm.runs`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewnorm.config import RunConfig
from fewnorm.data import load_split
from fewnorm.episodes.algorithms import Algorithm, get_algorithm
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError, TrainingDiverged
from fewnorm.metrics import Interval, mean_ci95
from fewnorm.runs import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeLog:
    """What the progress display shows after each training episode."""

    episode: int
    total: int
    loss: float
    accuracy: float


@dataclass
class RunSummary:
    """The result of a run, as printed and as saved in ``summary.json``."""

    config: dict[str, Any]
    best_val_accuracy: float
    best_val_episode: int
    test: Interval
    parameters: int
    wall_seconds: float
    train_seconds_per_episode: float
    run_dir: str
    test_accuracies: list[float] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["test"] = {"accuracy": self.test.mean, "ci95": self.test.ci95, "episodes": self.test.n}
        return data


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return device


def build_model(config: RunConfig, in_channels: int) -> nn.Module:
    """The algorithm's model with the configured normalizer (options checked here)."""
    return get_algorithm(config).build(config, in_channels)


def evaluate(
    algorithm: Algorithm,
    model: nn.Module,
    sampler: EpisodeSampler,
    episodes: int,
    base_seed: int,
    device: torch.device,
    on_episode: Callable[[int], None] | None = None,
) -> list[float]:
    """Accuracy on each of the fixed episodes ``base_seed + i``, ``i < episodes``."""
    accuracies = []
    for i in range(episodes):
        accuracies.append(algorithm.evaluate(model, sampler.fixed(i, base_seed).to(device)))
        if on_episode is not None:
            on_episode(i + 1)
    return accuracies


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    on_episode: Callable[[EpisodeLog], None] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> RunSummary:
    """Train ``config`` end to end and write its run directory; returns the summary.

    ``on_stage(name, total)`` may return a per-episode callback for the
    validation and test stages (the CLI's progress bars).
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    stores = {
        split: load_split(config.dataset, split, config.data_root) for split in ("train", "val", "test")
    }
    train_sampler = EpisodeSampler(
        stores["train"],
        config.effective_train_ways,
        config.effective_train_shots,
        config.train_queries,
        split="train",
    )
    val_sampler = EpisodeSampler(stores["val"], config.ways, config.shots, config.queries, split="val")
    test_sampler = EpisodeSampler(stores["test"], config.ways, config.shots, config.queries, split="test")

    algorithm = get_algorithm(config)
    torch.manual_seed(config.seed)
    model = algorithm.build(config, stores["train"].image_shape[0]).to(device)
    optimizer = algorithm.optimizer(model, config)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, config.lr_halve_every, gamma=0.5)
        if config.lr_halve_every
        else None
    )
    runs = RunDir(run_dir)
    runs.prepare()
    runs.write_config(config.model_dump())
    runs.write_versions()

    generator = torch.Generator().manual_seed(config.seed)
    best_acc, best_episode, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    window: list[tuple[float, float]] = []
    train_time = 0.0
    for episode in range(1, config.episodes + 1):
        t0 = time.perf_counter()
        batch = [train_sampler.sample(generator).to(device) for _ in range(config.meta_batch)]
        result = algorithm.train_step(model, optimizer, batch)
        if scheduler is not None:
            scheduler.step()
        train_time += time.perf_counter() - t0
        if not math.isfinite(result.loss):
            raise TrainingDiverged(
                f"training diverged at episode {episode} with normalizer '{config.norm}' "
                f"(loss {result.loss}); lower --lr or change the normalizer's options"
            )
        window.append((result.loss, result.accuracy))
        if on_episode is not None:
            on_episode(EpisodeLog(episode, config.episodes, result.loss, result.accuracy))
        if episode % 50 == 0 or episode == config.episodes:
            losses, accs = zip(*window, strict=True)
            runs.log(
                {
                    "kind": "train",
                    "episode": episode,
                    "loss": sum(losses) / len(losses),
                    "accuracy": sum(accs) / len(accs),
                }
            )
            window.clear()
        if episode % config.val_every == 0 or episode == config.episodes:
            callback = on_stage("validate", config.val_episodes) if on_stage else None
            val = mean_ci95(
                evaluate(
                    algorithm, model, val_sampler, config.val_episodes, config.val_seed, device, callback
                )
            )
            runs.log({"kind": "val", "episode": episode, "accuracy": val.mean, "ci95": val.ci95})
            if val.mean > best_acc:
                best_acc, best_episode = val.mean, episode
                best_state = copy.deepcopy(model.state_dict())
                runs.save_checkpoint(
                    {
                        "config": config.model_dump(),
                        "model": best_state,
                        "episode": episode,
                        "val_accuracy": val.mean,
                    }
                )
            log.info("episode %d: val %.4f (best %.4f @ %d)", episode, val.mean, best_acc, best_episode)

    model.load_state_dict(best_state)
    callback = on_stage("test", config.test_episodes) if on_stage else None
    accuracies = evaluate(
        algorithm, model, test_sampler, config.test_episodes, config.test_seed, device, callback
    )
    summary = RunSummary(
        config=config.model_dump(),
        best_val_accuracy=best_acc,
        best_val_episode=best_episode,
        test=mean_ci95(accuracies),
        parameters=count_parameters(model),
        wall_seconds=time.perf_counter() - started,
        train_seconds_per_episode=train_time / config.episodes,
        run_dir=str(run_dir),
        test_accuracies=accuracies,
    )
    runs.write_summary(summary.to_dict())
    return summary
