"""The local sweep engine: a sweep's runs in this process, or in a pool of spawned ones.

Workers report progress as small tuples (through a ``multiprocessing`` queue
when spawned), which the caller's ``show`` callback draws (the command line's rich display):

- ``("start", name, total_episodes)``, ``("episode", name, episode)``,
- ``("stage", name, stage, done, total)``, ``("done", name, status, message)``,
- ``("worker", name, pid, host)`` from the Ray engine (:mod:`fewnorm.episodes.sweep_ray`) when a
  run's task starts on a worker process (the display ignores it).

Ctrl-C: the parent sets a stop event; each worker raises ``KeyboardInterrupt``
at its next episode boundary, so :func:`fewnorm.episodes.loop.train` writes its
final checkpoint; workers themselves ignore SIGINT (no stray tracebacks).
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fewnorm.compare import Sweep

Event = tuple[Any, ...]
_report: Callable[[Event], None] = lambda event: None  # noqa: E731
_stop: Any = None  # a multiprocessing Event in spawned workers


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; the runs in progress have written their checkpoints."""


@dataclass(frozen=True)
class Task:
    name: str
    config: dict[str, Any]
    run_dir: str
    resume: bool


def preflight(sweep: Sweep) -> None:
    """Fail in one line before any training: data present, episodes possible, models buildable."""
    from fewnorm.config import RunConfig, validate_config
    from fewnorm.episodes.loop import check_new_run, resolve_device  # train()'s
    from fewnorm.episodes.plan import plan_run
    from fewnorm.episodes.sampler import EpisodeSampler

    c = RunConfig.model_validate(sweep.runs()[0].config)
    resolve_device(c.device)  # an unknown device fails here, not in every run
    check_new_run(c)  # and settings the algorithm would ignore (--set head=... for protonet)
    stores = plan_run(c).splits(("train", "val", "test"))  # each entry's plan reads the same cache
    train = EpisodeSampler(stores["train"], c.effective_train_ways, c.effective_train_shots,
                           c.train_queries, split="train")  # fmt: skip
    for split in ("val", "test"):
        EpisodeSampler(stores[split], c.ways, c.shots, c.queries, split=split)
    for entry in sweep.norms:
        # validated as each run's own config is, so that it gets the mode its run will use
        entry_config = validate_config(
            sweep.base | entry.settings | {"norm": entry.norm, "norm_options": entry.options}, "sweep"
        )
        plan = plan_run(entry_config)
        config, _ = plan.training(stores["train"], train)  # Baseline's head: one output per class
        plan.algorithm.build(config, stores["train"].image_shape[0])


def resume_decision(run_dir: Path) -> bool | None:
    """What to do with the run in ``run_dir``, from its files alone.

    None: nothing (finished or diverged); True: resume from its ``last.pt``; False: start over.
    """
    from fewnorm.runs import run_status

    status = run_status(run_dir)
    if status in ("finished", "diverged"):
        return None
    return status in ("interrupted", "resumable")


def plan_tasks(sweep: Sweep, out: Path) -> list[Task]:
    """Runs still to do: finished and diverged ones are skipped, unfinished ones resumed."""
    tasks = []
    for run in sweep.runs():
        resume = resume_decision(out / run.name)
        if resume is not None:
            tasks.append(Task(run.name, run.config, str(out / run.name), resume))
    return tasks


def run_task(
    task: Task, report: Callable[[Event], None] | None = None, stop: Any = None
) -> tuple[str, str, str]:
    """Train one run; returns ``(name, status, message)`` with status ok | diverged | failed | interrupted.

    ``report`` receives the progress events and ``stop`` (anything with ``is_set()``) asks the run
    to stop at its next episode boundary; both default to this process's worker channel.
    """
    from fewnorm.config import RunConfig
    from fewnorm.episodes.loop import EpisodeLog, RunInterrupted, train
    from fewnorm.errors import FewnormError, TrainingDivergedError
    from fewnorm.runs import RunDir

    emit = report or _report
    stop = stop if stop is not None else _stop
    if stop is not None and stop.is_set():  # queued before Ctrl-C: leave it untouched
        return task.name, "interrupted", ""
    run_dir = Path(task.run_dir)
    config = RunConfig.model_validate(task.config)
    resume = task.resume
    if resume:
        try:
            RunDir(run_dir).load_last()
        except FewnormError:  # a torn or foreign last.pt: start over
            resume = False
    if not resume:
        try:
            RunDir(run_dir).check_unowned()  # another sweep trains it now: never delete a live run
        except FewnormError as exc:
            emit(("done", task.name, "failed", str(exc)))
            return task.name, "failed", str(exc)
        shutil.rmtree(run_dir, ignore_errors=True)
    emit(("start", task.name, config.episodes))

    def check_stop() -> None:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt

    def on_episode(log: EpisodeLog) -> None:
        emit(("episode", task.name, log.episode))
        check_stop()

    def on_stage(stage: str, total: int) -> Callable[[int], None]:
        def advance(done: int) -> None:
            if done == total or done % 10 == 0:
                emit(("stage", task.name, stage, done, total))
            check_stop()

        return advance

    status, message = "ok", ""
    try:
        train(config, run_dir, resume=resume, on_episode=on_episode, on_stage=on_stage)
    except TrainingDivergedError as exc:
        status, message = "diverged", str(exc)
    except RunInterrupted:
        if stop is None:
            raise  # in-process: the command reports it
        status = "interrupted"
    except FewnormError as exc:
        status, message = "failed", str(exc)
    except Exception as exc:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.log").write_text(traceback.format_exc())
        status, message = "failed", f"{type(exc).__name__}: {exc} (traceback in {run_dir / 'error.log'})"
    emit(("done", task.name, status, message))
    return task.name, status, message


def _init_worker(queue: Any, stop: Any, threads: int, plugins: list[str]) -> None:
    import signal

    import torch

    from fewnorm.norms.plugins import load_plugins

    global _report, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _report, _stop = queue.put, stop
    torch.set_num_threads(threads)
    load_plugins(plugins)


def execute(
    tasks: list[Task], jobs: int, threads: int, plugins: list[str], show: Callable[[Event], None]
) -> dict[str, str]:
    """Run ``tasks`` (``jobs`` at once), their events to ``show``; returns ``name -> message`` of failures."""
    failures: dict[str, str] = {}
    if not tasks:
        return failures
    if jobs > 1:
        return _pool(tasks, jobs, threads, plugins, show)
    import torch

    global _report
    torch.set_num_threads(threads)
    _report = show
    try:
        for task in tasks:
            name, status, message = run_task(task)
            if status == "failed":
                failures[name] = message
    except KeyboardInterrupt as exc:
        raise SweepInterrupted(str(exc) or "Ctrl-C") from None
    finally:
        _report = lambda event: None  # noqa: E731
    return failures


def _pool(
    tasks: list[Task], jobs: int, threads: int, plugins: list[str], show: Callable[[Event], None]
) -> dict[str, str]:
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    events, stop = ctx.Queue(), ctx.Event()

    def drain() -> None:
        while True:
            try:
                show(events.get_nowait())
            except queues.Empty:
                return

    failures: dict[str, str] = {}
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_init_worker, initargs=(events, stop, threads, plugins)
    ) as pool:
        futures = {pool.submit(run_task, t): t for t in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    try:
                        name, status, message = future.result()
                    except Exception as exc:  # a worker died (killed, out of memory)
                        name, status, message = futures[future].name, "failed", f"worker died: {exc}"
                    if status == "failed":
                        failures[name] = message
        except KeyboardInterrupt:
            stop.set()
            for future in pending:
                future.cancel()
            wait(pending, timeout=120)  # running ones checkpoint at their next episode
            drain()
            raise SweepInterrupted("Ctrl-C") from None
        drain()
    return failures
