"""A sweep end to end, for ``fewnorm compare`` and any library caller: check, train, read, write.

:func:`run_sweep` holds the sweep directory's lock, checks the sweep before any training
(:func:`~fewnorm.episodes.sweep.preflight`), trains what is missing on an engine (a local
process pool, or Ray), reads every run back, and writes ``results.csv``,
``results.json`` and the plots. Finished runs are reused: a second call retrains nothing,
and a killed sweep loses at most the runs in flight.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fewnorm.compare import Row, RunResult, Sweep, check_manifest, read_run, summarize, write_results
from fewnorm.episodes.sweep import Event, Task, execute, plan_tasks, preflight
from fewnorm.errors import ConfigError
from fewnorm.runs import RunDir

log = logging.getLogger(__name__)

#: ``jobs=0`` trains at most this many runs at once (each process holds its own copy of the data).
MAX_AUTO_JOBS = 4
#: Where a sweep's runs train: a local process pool, or tasks on a Ray cluster.
ENGINES = ("local", "ray")

#: Opens the caller's progress display for the tasks about to run, out of ``planned`` runs in all;
#: yields the sink of the engines' events.
Display = Callable[[list[Task], int], AbstractContextManager[Callable[[Event], None]]]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep left: its rows (ranked), every run read back, and what was skipped."""

    out: Path
    rows: list[Row]
    results: list[RunResult]
    skipped: int  # runs already done before this call
    planned: int
    failures: dict[str, str]  # run name -> why it failed, for the runs trained by this call


@contextmanager
def _silent(tasks: list[Task], planned: int) -> Iterator[Callable[[Event], None]]:
    if len(tasks) < planned:
        log.info("%d/%d runs already done; skipped", planned - len(tasks), planned)
    yield lambda event: None


def check_engine(engine: str, address: str | None, jobs: int) -> str:
    """The engine's name, after checking the options that belong to one engine only."""
    name = engine.strip().lower()
    if name not in ENGINES:
        raise ConfigError(f"unknown --engine '{engine}'; known engines: {', '.join(ENGINES)}")
    if address is not None and name != "ray":
        raise ConfigError("--address names a Ray cluster: use it with --engine ray")
    if name == "ray" and jobs:
        raise ConfigError(
            "--jobs is for the local engine: with --engine ray every run is a task and Ray runs as many "
            "at once as the cluster's CPUs allow (each asks for --threads)"
        )
    return name


def check_parallelism(jobs: int, threads: int | None) -> None:
    """``jobs`` (0: automatic) and ``threads`` (None: automatic) as a sweep accepts them."""
    if jobs < 0:
        raise ConfigError(f"--jobs must be 0 (automatic) or positive, got {jobs}")
    if threads is not None and threads < 1:  # 0 is not "the default": refused, as train refuses it
        raise ConfigError(f"--threads must be positive, got {threads}")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    jobs: int = 0,
    threads: int | None = None,
    plugins: list[str] | None = None,
    engine: str = "local",
    address: str | None = None,
    display: Display = _silent,
    plots: bool = False,
) -> SweepOutcome:
    """Check, train what is missing, then read every run back and write the results.

    The sweep directory belongs to this process meanwhile: a second sweep with the same
    ``out`` is refused in one line (each run directory is locked by its training too).
    Ctrl-C raises :class:`~fewnorm.episodes.sweep.SweepInterrupted` once the runs in flight
    have written their checkpoints.
    """
    engine = check_engine(engine, address, jobs)
    check_parallelism(jobs, threads)
    if engine == "ray":
        from fewnorm.episodes.sweep_ray import require_ray

        require_ray()
    with RunDir(out).lock("sweep directory"):
        if engine == "ray":
            from fewnorm.episodes.sweep_ray import gpus_per_run

            gpus_per_run(sweep.base.get("device") or "cpu")  # refuse cuda:N before any data is read
        preflight(sweep)
        check_manifest(out, sweep)
        tasks = plan_tasks(sweep, out)
        planned = sweep.runs()
        with display(tasks, len(planned)) as show:
            if engine == "ray":
                from fewnorm.episodes.sweep_ray import execute_ray

                failures = execute_ray(tasks, threads or 1, plugins or [], show, address)
            else:
                jobs = min(jobs or min(cores(), MAX_AUTO_JOBS), max(1, len(tasks)))
                failures = execute(tasks, jobs, threads or max(1, cores() // jobs), plugins or [], show)
        results = [read_run(out / r.name, r, failures.get(r.name, "")) for r in planned]
        rows = summarize(sweep, results)
        write_results(out, sweep, rows, results)
        if plots:
            write_plots(out, sweep, rows, results)
    return SweepOutcome(out, rows, results, len(planned) - len(tasks), len(planned), failures)


def sweep_title(sweep: Sweep) -> str:
    """One line naming the sweep's algorithm, data, setting, budget and seeds."""
    b = sweep.base
    seeds = f"{len(sweep.seeds)} seeds" if len(sweep.seeds) > 1 else f"seed {sweep.seeds[0]}"
    return (
        f"{b['algo']} {b['backbone']} on {b['dataset']}, {b['ways']}-way {b['shots']}-shot, "
        f"{b['episodes']} episodes, {b['test_episodes']} test episodes, {seeds}"
    )


def write_plots(out: Path, sweep: Sweep, rows: list[Row], results: list[RunResult]) -> None:
    """``accuracy.png`` (with paired intervals) and ``curves.png`` (validation curves) of a sweep."""
    from fewnorm.compare import sweep_curves
    from fewnorm.plots import norm_colors, plot_accuracy, plot_curves

    title = sweep_title(sweep)
    colors = norm_colors([e.label for e in sweep.norms])  # one colour per normalizer in both
    runs = sweep.runs()
    ways = runs[0].config.get("ways") if runs else None
    plot_accuracy(
        rows,
        out / "accuracy.png",
        baseline=sweep.baseline,
        title=title,
        colors=colors,
        chance=1 / ways if isinstance(ways, int) and ways > 0 else None,
    )
    plot_curves(sweep_curves(results), out / "curves.png", title=title, colors=colors)
