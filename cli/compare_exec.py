"""Running a sweep's runs for ``fewnorm compare``: in this process, or in a pool of spawned ones.

Workers report progress as small tuples (through a ``multiprocessing`` queue
when spawned), which one rich display in the parent draws:

- ``("start", name, total_episodes)``, ``("episode", name, episode)``,
- ``("stage", name, stage, done, total)``, ``("done", name, status, message)``,
- ``("worker", name, pid, host)`` from the Ray engine (:mod:`fewnorm.cli.compare_ray`) when a
  run's task starts on a worker process (the display ignores it).

Ctrl-C: the parent sets a stop event; each worker raises ``KeyboardInterrupt``
at its next episode boundary, so :func:`fewnorm.episodes.loop.train` writes its
final checkpoint; workers themselves ignore SIGINT (no stray tracebacks).
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    from fewnorm.algorithms import get_algorithm_spec
    from fewnorm.cli.train import _check_norm
    from fewnorm.config import RunConfig, validate_config
    from fewnorm.episodes.loop import build_model, check_new_run, load_split, resolve_device  # train()'s
    from fewnorm.episodes.sampler import EpisodeSampler

    c = RunConfig.model_validate(sweep.runs()[0].config)
    resolve_device(c.device)  # an unknown device fails here, not in every run
    check_new_run(c)  # and settings the algorithm would ignore (--set head=... for protonet)
    stores = {s: load_split(c.dataset, s, c.data_root, **c.data_options) for s in ("train", "val", "test")}
    EpisodeSampler(stores["train"], c.effective_train_ways, c.effective_train_shots, c.train_queries,
                   split="train")  # fmt: skip
    for split in ("val", "test"):
        EpisodeSampler(stores[split], c.ways, c.shots, c.queries, split=split)
    for entry in sweep.norms:
        # validated as each run's own config is, so that it gets the mode its run will use
        entry_config = validate_config(
            sweep.base | entry.settings | {"norm": entry.norm, "norm_options": entry.options}, "sweep"
        )
        config = _check_norm(entry_config, {})
        if get_algorithm_spec(config.algo).family == "finetune":  # its head: one output per training class
            config = config.model_copy(update={"pretrain_classes": stores["train"].num_classes})
        build_model(config, stores["train"].image_shape[0])


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

    from fewnorm.cli.train import load_plugins

    global _report, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _report, _stop = queue.put, stop
    torch.set_num_threads(threads)
    load_plugins(plugins)


def execute(tasks: list[Task], jobs: int, threads: int, plugins: list[str], progress: bool) -> dict[str, str]:
    """Run ``tasks``; returns ``name -> message`` of the runs that failed."""
    failures: dict[str, str] = {}
    if not tasks:
        return failures
    with sweep_progress(tasks, progress) as show:
        if jobs == 1:
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
        else:
            failures = _pool(tasks, jobs, threads, plugins, show)
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


def _plain_sweep_lines(runs: int, console: Any) -> Callable[[Event], None]:
    """Sweep progress as plain lines, for a stderr that is not a terminal."""
    finished = [0]

    def show(event: Event) -> None:
        kind, name, *rest = event
        if kind == "start":
            console.print(f"{name}: training {rest[0]} episodes", markup=False, highlight=False)
        elif kind == "done":
            finished[0] += rest[0] != "interrupted"
            detail = f" {rest[1]}" if rest[0] != "ok" and rest[1] else ""
            console.print(
                f"{name}: {rest[0]}{detail} ({finished[0]}/{runs} runs)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    return show


@contextmanager
def sweep_progress(tasks: list[Task], enabled: bool) -> Iterator[Callable[[Event], None]]:
    """One display for the sweep: an overall bar over every training episode, one bar per active run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fewnorm.cli.render import stderr

    if enabled and not stderr.is_terminal:  # a log file: a line per run started and finished
        yield _plain_sweep_lines(len(tasks), stderr)
        return
    total = sum(t.config["episodes"] for t in tasks)
    progress = Progress(
        TextColumn("[bold]{task.description:>22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=not enabled,
    )
    overall = progress.add_task("sweep", total=total, what=f"0/{len(tasks)} runs")
    bars: dict[str, Any] = {}
    seen: dict[str, int] = {}
    finished = [0]

    def show(event: Event) -> None:
        kind, name, *rest = event
        if kind == "start":
            bars[name] = progress.add_task(name, total=rest[0], what="train")
            seen[name] = 0
        elif kind == "episode" and name in bars:
            progress.update(bars[name], completed=rest[0], what="train")
            progress.advance(overall, rest[0] - seen[name])
            seen[name] = rest[0]
        elif kind == "stage" and name in bars:
            progress.update(bars[name], what=f"{rest[0]} {rest[1]}/{rest[2]}")
        elif kind == "done":
            if name in bars:
                progress.remove_task(bars.pop(name))
            finished[0] += rest[0] != "interrupted"
            progress.update(overall, what=f"{finished[0]}/{len(tasks)} runs")
            if rest[0] != "ok":
                progress.console.print(f"{name}: [red]{rest[0]}[/] {rest[1]}")

    with progress:
        yield show
