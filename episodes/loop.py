"""Meta-training, validation on fixed episodes, checkpoints, resumption, and the final test.

The loop only orchestrates: the algorithm lives in pure step functions
(:mod:`fewnorm.episodes.algorithms`), the files in :mod:`fewnorm.runs`.

Checkpoint cadence: ``last.pt`` (model, optimizer, scheduler, the training
episode generator, torch's RNG, the episode counter, best-so-far and the
metrics so far) is written atomically at every validation (``val_every``) and
on Ctrl-C; a killed run loses at most the episodes since its last validation.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewnorm import distributed, torchrun
from fewnorm.allocator import keep_freed_memory
from fewnorm.collapse import diagnose, last_train_accuracy
from fewnorm.config import RunConfig, validate_config
from fewnorm.data import load_split
from fewnorm.data.affine import affine_episode
from fewnorm.data.augment import augment_episode
from fewnorm.episodes.algorithms import EpisodeScorer, get_algorithm, memory_format
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError, FewnormError, TrainingDivergedError
from fewnorm.metrics import Interval, mean_ci95
from fewnorm.norms import learning_rate_scale
from fewnorm.precision import slow_amp_reason
from fewnorm.runs import RunDir, run_status

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
    collapse: dict[str, str] | None = None  # fewnorm.collapse.Collapse: test accuracy at chance

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
    algorithm: EpisodeScorer,
    model: nn.Module,
    sampler: EpisodeSampler,
    episodes: int,
    base_seed: int,
    device: torch.device,
    on_episode: Callable[[int], None] | None = None,
    group: distributed.Group | None = None,
) -> list[float]:
    """Accuracy on each of the fixed episodes ``base_seed + i``, ``i < episodes`` (split over ``group``)."""
    if group is not None:
        return group.evaluate(
            lambda i: algorithm.evaluate(model, sampler.fixed(i, base_seed).to(device)), episodes, on_episode
        )
    accuracies: list[float] = []
    size = algorithm.eval_chunk()  # vectorized MAML adapts a chunk of episodes together
    for start in range(0, episodes, size):
        chunk = range(start, min(start + size, episodes))
        accuracies += algorithm.evaluate_many(model, [sampler.fixed(i, base_seed).to(device) for i in chunk])
        if on_episode is not None:
            on_episode(len(accuracies))
    return accuracies


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class TrainState:
    """A run in progress, as ``last.pt`` restores it (besides model, optimizer and RNGs)."""

    episode: int = 0  # training episodes done
    validated: int = 0  # the last episode whose validation is recorded
    best_acc: float = -1.0
    best_episode: int = 0
    best_state: dict[str, Any] = field(default_factory=dict)
    window: list[tuple[float, float]] = field(default_factory=list)  # train losses since the last log
    train_time: float = 0.0
    wall_before: float = 0.0  # wall seconds of earlier sessions of a resumed run
    records: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl so far


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: ``last.pt`` and a partial summary are written."""

    def __init__(self, run_dir: Path, episode: int, total: int) -> None:
        super().__init__(f"interrupted at episode {episode}/{total}")
        self.run_dir, self.episode, self.total = run_dir, episode, total


@contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a checkpoint never sees half an episode.

    Only where Python's default handler is installed (main thread); elsewhere
    (workers that ignore SIGINT, custom handlers) the block runs unchanged.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _val_due(episode: int, config: RunConfig) -> bool:
    return episode > 0 and (episode % config.val_every == 0 or episode == config.episodes)


def _snapshot(
    config: RunConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
    state: TrainState,
    wall: float,
) -> dict[str, Any]:
    """Everything ``last.pt`` holds (see :data:`fewnorm.runs.RESUME_KEYS`)."""
    return {
        "config": config.model_dump(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": device_rng_state(device),
        "episode": state.episode,
        "state": {f.name: getattr(state, f.name) for f in fields(state) if f.name != "records"}
        | {"wall_before": wall},
        "records": list(state.records),
    }


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The generator state of the run's CUDA device (DropBlock draws its masks there); CPU: None."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_device_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    """Restore :func:`device_rng_state` on the run's device (a CPU resume of a CUDA run skips it)."""
    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


def check_resumable(path: Path) -> None:
    """Refuse, in one line, a run directory whose run has finished or diverged."""
    status = run_status(path)
    if status == "finished":
        raise FewnormError(f"run '{path}' has already finished; there is nothing to resume")
    if status == "diverged":
        raise FewnormError(f"run '{path}' diverged; resuming would repeat it (see diverged.json)")


def _restore(
    runs: RunDir,
    config: RunConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    device: torch.device,
) -> TrainState:
    """Load ``last.pt`` into the fresh objects; ``metrics.jsonl`` is cut back to the checkpoint."""
    check_resumable(runs.path)
    checkpoint = runs.load_last()
    # Validated, so that keys added to RunConfig after the checkpoint was written get their defaults.
    saved = validate_config(checkpoint["config"], f"checkpoint in '{runs.path}'")
    distributed.check_resume_world_size(saved.world_size, config.world_size, runs.path)
    if saved.model_dump() != config.model_dump():
        raise ConfigError(f"'{runs.path}' was trained with other settings; resume it with its own config")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    generator.set_state(checkpoint["generator"])
    torch.set_rng_state(checkpoint["torch_rng"])
    set_device_rng_state(device, checkpoint.get("cuda_rng"))
    state = TrainState(**checkpoint["state"], records=checkpoint["records"])
    state.window = [tuple(w) for w in state.window]  # type: ignore[misc]
    runs.rewrite_metrics(state.records)
    log.info("resuming '%s' at episode %d", runs.path, state.episode)
    return state


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_episode: Callable[[EpisodeLog], None] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> RunSummary:
    """Train ``config`` end to end and write its run directory; returns the summary.

    ``on_stage(name, total)`` may return a per-episode callback for the
    validation and test stages (the CLI's progress bars). ``resume`` continues
    the run in ``run_dir`` from its ``last.pt`` (written at every validation and
    on Ctrl-C); on CPU the result is bit-identical to an uninterrupted run.
    Ctrl-C (or a ``KeyboardInterrupt`` from a callback) writes ``last.pt`` and a
    partial summary, then raises :class:`RunInterrupted`.
    """
    started = time.perf_counter()
    keep_freed_memory()  # speed only: steps stop faulting their activations' pages in again
    group = torchrun.join(config)  # None: one process without torchrun, the ordinary path
    if config.threads is not None:  # recorded in the run: CPU results depend on the thread count
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device) if group is None else group.device
    if (slow := slow_amp_reason(config.amp, device)) is not None:
        log.warning("%s", slow)
    lake_style = config.val_protocol is not None  # validated on a fold's lake-style runs
    stores = {
        split: load_split(config.dataset, split, config.data_root, **config.data_options)
        for split in ("train", "test", *(() if lake_style else ("val",)))
    }
    train_sampler = EpisodeSampler(
        stores["train"],
        config.effective_train_ways,
        config.effective_train_shots,
        config.train_queries,
        split="train",
    )
    test_sampler = EpisodeSampler(stores["test"], config.ways, config.shots, config.queries, split="test")

    if config.channels_last is None:  # recorded resolved: a later release may declare otherwise
        config = config.model_copy(update={"channels_last": memory_format(config)[0]})
    algorithm = get_algorithm(config)
    validate = _validator(config, stores, device, group)
    torch.manual_seed(config.seed)
    model = algorithm.build(config, stores["train"].image_shape[0]).to(device)
    optimizer = algorithm.optimizer(model, config)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, config.lr_halve_every, gamma=0.5)
        if config.lr_halve_every
        else None
    )
    runs = RunDir(run_dir) if group is None else group.run_dir(run_dir)
    generator = torch.Generator().manual_seed(config.seed)
    if resume:
        state = _restore(runs, config, model, optimizer, scheduler, generator, device)
    else:
        runs.prepare()
        runs.write_config(config.model_dump())
        runs.write_versions()
        state = TrainState(best_state=copy.deepcopy(model.state_dict()))
    if group is not None:
        group.attach(model, optimizer)

    def record(entry: dict[str, Any]) -> None:
        state.records.append(entry)
        runs.log(entry)

    def wall() -> float:
        return state.wall_before + time.perf_counter() - started

    def save_last() -> None:
        runs.save_last(_snapshot(config, model, optimizer, scheduler, generator, device, state, wall()))

    saved, testing = (state.episode, state.validated), False
    try:
        while True:
            if _val_due(state.episode, config) and state.validated < state.episode:
                callback = on_stage("validate", config.val_episodes) if on_stage else None
                val = mean_ci95(validate(algorithm, model, callback))
                with _deferred_sigint():
                    episode = state.episode
                    entry = {"kind": "val", "episode": episode, "accuracy": val.mean, "ci95": val.ci95}
                    record(entry | ({"lake_style_error": 100 * (1 - val.mean)} if lake_style else {}))
                    if val.mean > state.best_acc:
                        state.best_acc, state.best_episode = val.mean, episode
                        state.best_state = copy.deepcopy(model.state_dict())
                        runs.save_checkpoint(
                            {
                                "config": config.model_dump(),
                                "model": state.best_state,
                                "episode": episode,
                                "val_accuracy": val.mean,
                            }
                        )
                    state.validated = episode
                    save_last()
                    saved = (state.episode, state.validated)
                log.info(
                    "episode %d: val %.4f (best %.4f @ %d)",
                    episode,
                    val.mean,
                    state.best_acc,
                    state.best_episode,
                )
            if state.episode >= config.episodes:
                break
            with _deferred_sigint():
                episode = state.episode + 1
                t0 = time.perf_counter()
                if group is None:
                    drawn = [train_sampler.sample(generator) for _ in range(config.meta_batch)]
                    if config.augment:  # training episodes only, from the training generator
                        drawn = [augment_episode(e, generator) for e in drawn]
                    if config.affine:  # small random affine distortions, from the same generator
                        drawn = [affine_episode(e, generator) for e in drawn]
                    batch = [e.to(device) for e in drawn]
                else:  # this rank's share; task j of this step drawn from (seed, episode, j)
                    batch = group.step_tasks(train_sampler, config, episode)
                with learning_rate_scale(optimizer.param_groups[0]["lr"] / config.lr):  # SWBN's coupling
                    result = algorithm.train_step(model, optimizer, batch)
                if group is not None:  # logged and checked for divergence alike on every rank
                    result = group.mean_result(result)
                if scheduler is not None:
                    scheduler.step()
                state.train_time += time.perf_counter() - t0
                if not math.isfinite(result.loss):
                    message = (
                        f"training diverged at episode {episode} with normalizer '{config.norm}' "
                        f"(loss {result.loss}); lower --lr or change the normalizer's options"
                    )
                    runs.mark_diverged(message, episode)
                    raise TrainingDivergedError(message)
                state.window.append((result.loss, result.accuracy))
                state.episode = episode
                if episode % 50 == 0 or episode == config.episodes:
                    losses, accs = zip(*state.window, strict=True)
                    record(
                        {
                            "kind": "train",
                            "episode": episode,
                            "loss": sum(losses) / len(losses),
                            "accuracy": sum(accs) / len(accs),
                        }
                    )
                    state.window.clear()
            if on_episode is not None:
                on_episode(EpisodeLog(episode, config.episodes, result.loss, result.accuracy))

        testing = True
        model.load_state_dict(state.best_state)
        callback = on_stage("test", config.test_episodes) if on_stage else None
        accuracies = evaluate(
            algorithm, model, test_sampler, config.test_episodes, config.test_seed, device, callback, group
        )
    except KeyboardInterrupt:
        if not testing and saved != (state.episode, state.validated):
            save_last()
        runs.write_summary(_partial_summary(config, run_dir, state, wall()))
        raise RunInterrupted(run_dir, state.episode, config.episodes) from None
    collapse = diagnose(accuracies, config.ways, last_train_accuracy(state.records), config.model_dump())
    if collapse is not None:
        log.warning("%s", collapse.line())
    summary = RunSummary(
        config=config.model_dump(),
        best_val_accuracy=state.best_acc,
        best_val_episode=state.best_episode,
        test=mean_ci95(accuracies),
        parameters=count_parameters(model),
        wall_seconds=wall(),
        train_seconds_per_episode=state.train_time / config.episodes,
        run_dir=str(run_dir),
        test_accuracies=accuracies,
        collapse=None if collapse is None else collapse.to_dict(),
    )
    runs.write_summary(summary.to_dict())
    runs.finish()
    return summary


Validate = Callable[[EpisodeScorer, nn.Module, Callable[[int], None] | None], list[float]]


def _validator(
    config: RunConfig, stores: dict[str, Any], device: torch.device, group: distributed.Group | None
) -> Validate:
    """Per-episode validation accuracies: the val split's fixed episodes, or the fold's lake-style runs."""
    if config.val_protocol is not None:
        from fewnorm.episodes.lake_style import LakeStyleValidator

        lake = LakeStyleValidator.for_config(config)
        return lambda algorithm, model, callback: lake.evaluate(model, device, callback)
    sampler = EpisodeSampler(stores["val"], config.ways, config.shots, config.queries, split="val")
    return lambda algorithm, model, callback: evaluate(
        algorithm, model, sampler, config.val_episodes, config.val_seed, device, callback, group
    )


def _partial_summary(config: RunConfig, run_dir: Path, state: TrainState, wall: float) -> dict[str, Any]:
    """``summary.json`` of an interrupted run: how far it got and how to continue."""
    return {
        "partial": True,
        "config": config.model_dump(),
        "episode": state.episode,
        "episodes": config.episodes,
        "best_val_accuracy": state.best_acc,
        "best_val_episode": state.best_episode,
        "wall_seconds": wall,
        "run_dir": str(run_dir),
        "resume": f"fewnorm train --resume {run_dir}",
    }
