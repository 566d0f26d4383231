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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewnorm import distributed, torchrun
from fewnorm.algorithms import EPISODE_OPTIONS, check_algorithm_options
from fewnorm.allocator import keep_freed_memory
from fewnorm.collapse import diagnose, last_train_accuracy
from fewnorm.config import RunConfig, validate_config
from fewnorm.data.affine import affine_episode
from fewnorm.data.augment import augment_episode
from fewnorm.episode import EpisodeScorer, EpisodeSource
from fewnorm.episodes.plan import RunPlan, plan_run
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError, FewnormError, RunWriteError, TrainingDivergedError
from fewnorm.metrics import Interval, mean_ci95
from fewnorm.norms import learning_rate_scale
from fewnorm.precision import slow_amp_reason
from fewnorm.runs import LAST, LOCK_HELD_ENV, RunDir, no_checkpoint_message, rerun_command, run_status

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
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)  # RunPlan.record(): decisions, reasons

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["test"] = {"accuracy": self.test.mean, "ci95": self.test.ci95, "episodes": self.test.n}
        return data


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device; anything else, or a GPU not there, is one line."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ConfigError(f"unknown device '{name}'; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{name}' requested but there are {torch.cuda.device_count()} GPUs "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return device


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
    first_loss: float | None = None  # the first step's training loss: the scale divergence is judged by
    recent_losses: list[float] = field(default_factory=list)  # the last GROWTH_WINDOW training losses
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


#: Training losses averaged when judging whether the loss grew by orders of magnitude.
GROWTH_WINDOW = 10
#: A loss this many times the first step's, over the last GROWTH_WINDOW steps, has diverged ...
GROWTH_FACTOR = 1e3
#: ... if it is above this too (a cross-entropy of 1000 means logits of the order of 1000).
GROWTH_FLOOR = 1e3


def _divergence(state: TrainState, loss: float) -> str | None:
    """Record the next step's training loss ``loss``; why it means divergence, or None.

    NaN or infinite, or a mean over the last :data:`GROWTH_WINDOW` steps that is
    :data:`GROWTH_FACTOR` times the first step's loss and above :data:`GROWTH_FLOOR`
    (``--lr 1e6`` drives a BatchNorm ProtoNet's loss from 3 to 1e11 while staying finite).
    """
    if not math.isfinite(loss):
        return f"loss {loss}"
    if state.first_loss is None:
        state.first_loss = loss
    state.recent_losses = [*state.recent_losses, loss][-GROWTH_WINDOW:]
    recent = sum(state.recent_losses) / len(state.recent_losses)
    if recent > GROWTH_FLOOR and recent > GROWTH_FACTOR * abs(state.first_loss):
        return (
            f"loss {recent:.3g} over the last {len(state.recent_losses)} steps, "
            f"{recent / abs(state.first_loss):.2g}x the first step's {state.first_loss:.3g}"
        )
    return None


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


def check_new_run(config: RunConfig) -> None:
    """Refuse method settings that a fresh run would accept and ignore (recorded, never used).

    The training episodes' shape is left alone here: a sweep over several algorithms shares it,
    and the minibatch methods record it unused (``fewnorm train`` refuses it when given).
    """
    defaults = {key: field.default for key, field in RunConfig.model_fields.items()}
    changed = {k: v for k, v in config if v != defaults.get(k, v) and k not in EPISODE_OPTIONS}
    check_algorithm_options(config.algo, changed)


def check_run_dir(config: RunConfig, run_dir: Path, *, resume: bool) -> None:
    """Refuse, in one line and before anything is read or written, a run directory that
    another process owns, that a fresh run would clobber, or that has nothing to resume."""
    runs = RunDir(run_dir)
    runs.check_unowned()  # a live run is in use, whatever its files say
    if resume:
        if not run_dir.is_dir():
            raise FewnormError(no_checkpoint_message(run_dir))
        check_resumable(run_dir)
    else:
        check_new_run(config)
        runs.check_fresh()  # refused before the lock, so that a refusal leaves nothing behind


def _group_rank() -> tuple[int, int] | None:
    """(rank, world size) of a process group the caller made before :func:`train`; None if none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def owns_run_lock(run_dir: Path) -> bool:
    """Whether this process takes the run directory's lock: not a follower rank, nor a worker
    whose ``fewnorm train --nproc`` launcher holds it."""
    import os

    group = _group_rank()
    rank = group[0] if group is not None else torchrun.launched_rank()
    if rank not in (None, 0):
        return False
    held = os.environ.get(LOCK_HELD_ENV)
    return not (held and Path(held).resolve() == run_dir.resolve())


@contextmanager
def _owned(config: RunConfig, run_dir: Path, *, resume: bool) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block, after :func:`check_run_dir`, where this process owns it.

    In a process group the caller made, rank 0's refusal reaches every rank (as
    :meth:`fewnorm.distributed.LeaderRunDir.prepare` shares its own), so none waits on a
    collective the others never join; under torchrun the group is made later, inside the
    run, and the agent stops the other workers when one fails.
    """
    group = _group_rank()
    shared = group is not None and group[1] > 1
    if not owns_run_lock(run_dir):
        if shared and (refused := distributed._share_outcome(None)) is not None:
            raise refused  # rank 0's: every rank of the group calls _share_outcome once here
        yield
        return
    with ExitStack() as held:
        refusal: FewnormError | None = None
        try:
            check_run_dir(config, run_dir, resume=resume)
            held.enter_context(RunDir(run_dir).lock())
        except FewnormError as exc:
            refusal = exc
        if shared:
            distributed._share_outcome(refusal)
        if refusal is not None:
            raise refusal
        yield


def _write_failure_hint(run_dir: Path, config: RunConfig) -> str:
    """What survived a failed write in ``run_dir`` and how to go on once space is freed."""
    if (run_dir / LAST).is_file():
        return (
            f"the previous checkpoint '{run_dir / LAST}' is intact: free space (or fix the "
            f"permission), then resume with `{distributed.resume_command(config.world_size, run_dir)}`"
        )
    return (
        "no checkpoint had been written yet: free space (or fix the permission), then rerun "
        f"the same command: `{rerun_command(run_dir)}`"
    )


def train(
    config: RunConfig | RunPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    on_episode: Callable[[EpisodeLog], None] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Train ``config`` end to end and write its run directory; returns the summary.

    A config is planned first (:func:`~fewnorm.episodes.plan.plan_run`: the normalizer
    checked as ``fewnorm train`` checks it, every name resolved once); a plan runs as made.
    The process owns ``run_dir`` while it trains (:meth:`fewnorm.runs.RunDir.lock`): a
    second ``train`` of the same directory is refused in one line, before any data is read.
    A run file that cannot be written (disk full) is one line that says what survived
    and how to go on. See :func:`_train` for the rest.
    """
    plan = config if isinstance(config, RunPlan) else plan_run(config)
    with _owned(plan.config, run_dir, resume=resume):
        try:
            return _train(
                plan,
                run_dir,
                resume=resume,
                on_episode=on_episode,
                on_stage=on_stage,
                on_record=on_record,
            )
        except RunWriteError as failed:
            raise RunWriteError(
                failed.path, failed.error, _write_failure_hint(run_dir, plan.config)
            ) from None


def _train(
    plan: RunPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    on_episode: Callable[[EpisodeLog], None] | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Train ``plan`` end to end and write its run directory; returns the summary.

    ``on_stage(name, total)`` may return a per-episode callback for the
    validation and test stages (the CLI's progress bars); ``on_record(entry)`` sees each
    ``metrics.jsonl`` record as it is written (``--logger``). ``resume`` continues
    the run in ``run_dir`` from its ``last.pt`` (written at every validation and
    on Ctrl-C); on CPU the result is bit-identical to an uninterrupted run.
    Ctrl-C (or a ``KeyboardInterrupt`` from a callback) writes ``last.pt`` and a
    partial summary, then raises :class:`RunInterrupted`.
    """
    started = time.perf_counter()
    config = plan.config
    keep_freed_memory()  # speed only: steps stop faulting their activations' pages in again
    group = torchrun.join(config)  # None: one process without torchrun, the ordinary path
    if config.threads is not None:  # recorded in the run: CPU results depend on the thread count
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device) if group is None else group.device
    if (slow := slow_amp_reason(config.amp, device)) is not None:
        log.warning("%s", slow)
    lake_style = config.val_protocol is not None  # validated on a fold's lake-style runs
    stores = plan.splits(("train", "test", *(() if lake_style else ("val",))))
    train_sampler: EpisodeSource = EpisodeSampler(
        stores["train"],
        config.effective_train_ways,
        config.effective_train_shots,
        config.train_queries,
        split="train",
    )
    test_sampler = EpisodeSampler(stores["test"], config.ways, config.shots, config.queries, split="test")

    algorithm = plan.algorithm
    config, train_sampler = plan.training(stores["train"], train_sampler)  # Baseline: minibatches
    validate = _validator(config, stores, device, group)
    torch.manual_seed(config.seed)
    model = algorithm.build(config, stores["train"].image_shape[0]).to(device)  # config: Baseline's classes
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
        runs.write_versions({"norm_source": plan.norm_spec.source})  # resume names its plugin
        state = TrainState(best_state=copy.deepcopy(model.state_dict()))
    if group is not None:
        group.attach(model, optimizer)

    def record(entry: dict[str, Any]) -> None:
        state.records.append(entry)
        runs.log(entry)
        if on_record is not None:  # experiment trackers (`--logger`) see what metrics.jsonl gets
            on_record(entry)

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
                if (why := _divergence(state, result.loss)) is not None:
                    message = (
                        f"training diverged at episode {episode} with normalizer '{config.norm}' "
                        f"({why}); lower --lr or change the normalizer's options"
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
        plan=plan.record(),
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
