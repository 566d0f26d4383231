"""``fewnorm study``: normalizers x algorithms x (ways, shots) x seeds, measured and reported.

Parses the spec and options, calls :func:`fewnorm.episodes.study.run_study` with the sweep
engine, writes ``report.md`` and ``report.html`` and prints each cell's table. The engine is
reached through :func:`sweep_engine` only.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fewnorm.cli.compare import parse_settings
from fewnorm.cli.train import PLUGIN_HELP
from fewnorm.errors import ConfigError
from fewnorm.norms.plugins import load_plugins

if TYPE_CHECKING:
    from fewnorm.episodes.study import Engine


def sweep_engine(
    engine: str, jobs: int, threads: int | None, plugins: list[str], progress: bool, address: str | None
) -> Engine:
    """The study's sweep engine: the library's sweep runner, drawn as ``compare`` draws it.

    Returns ``run name -> failure message``; Ctrl-C raises a ``KeyboardInterrupt`` once the runs in
    flight have checkpointed.
    """
    if engine == "ray":  # missing Ray is one line now, not after the first cell
        from fewnorm.episodes.sweep_ray import require_ray

        require_ray()

    def run(sweep: Any, folder: Path) -> dict[str, str]:
        from fewnorm.cli.sweep_view import sweep_display
        from fewnorm.episodes.sweep_run import run_sweep

        outcome = run_sweep(sweep, folder, jobs=jobs, threads=threads, plugins=plugins, engine=engine,
                            address=address, display=sweep_display(progress, folder))  # fmt: skip
        return outcome.failures

    return run


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: str | None, flag: str) -> list[int] | None:
    items = _list(text)
    if items is None:
        return None
    try:
        return [int(t) for t in items]
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated integers, e.g. 1,5; got '{text}'") from None


def study(
    spec: Path | None = typer.Argument(
        None, help="Study spec YAML (norms, algos, settings, seeds, set ...)."
    ),
    norms: str | None = typer.Option(None, help="Comma-separated normalizers, or 'all' (the built-in ones)."),
    algos: str | None = typer.Option(None, help="Comma-separated algorithms (default protonet)."),
    settings: str | None = typer.Option(None, help="Comma-separated WAYSwSHOTSs settings, e.g. 5w1s,5w5s."),
    ways: str | None = typer.Option(None, help="Ways, comma-separated (with --shots: every pair)."),
    shots: str | None = typer.Option(None, help="Shots, comma-separated, e.g. 1,5."),
    seeds: int | None = typer.Option(None, help="Seeds per normalizer and cell (default 1)."),
    baseline: str | None = typer.Option(None, help="Normalizer the paired differences are taken to."),
    probe_seeds: int | None = typer.Option(None, help="Initializations averaged by the probe (default 3)."),
    transductive_episodes: int | None = typer.Option(
        None, help="Test episodes re-scored one query at a time (default: all of a run's)."
    ),
    setting: list[str] | None = typer.Option(
        None, "--set", help="Run-configuration key=value for every run (repeatable), e.g. --set episodes=200."
    ),
    engine: str = typer.Option("local", help="Where runs train: local (a process pool) | ray (Ray tasks)."),
    address: str | None = typer.Option(None, help="Ray cluster of --engine ray (auto or HOST:PORT)."),
    jobs: int = typer.Option(0, help="Runs trained at once by the local engine (0: min(cores, runs, 4))."),
    threads: int | None = typer.Option(None, help="Torch threads per run and for the measurements."),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    data_root: Path | None = typer.Option(None, help="Data root (else $FEWNORM_DATA, then the saved one)."),
    out: Path | None = typer.Option(None, help="Study directory (default runs/study-<spec hash>)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report paths and tables as JSON."),
    progress: bool = typer.Option(True, help="Show progress on stderr."),
) -> None:
    """Run a grid of normalizers x algorithms x settings x seeds and report which normalizer wins, and why."""
    from fewnorm.episodes.sweep_run import check_engine, check_parallelism
    from fewnorm.study.spec import build_study, read_spec_file

    load_plugins(plugin)
    check_parallelism(jobs, threads)
    engine = check_engine(engine, address, jobs)
    shared = parse_settings(setting) | ({"data_root": str(data_root)} if data_root else {})
    options = {
        "norms": "all" if norms == "all" else _list(norms),
        "algos": _list(algos),
        "settings": _list(settings),
        "ways": _ints(ways, "--ways"),
        "shots": _ints(shots, "--shots"),
        "seeds": seeds,
        "baseline": baseline,
        "probe_seeds": probe_seeds,
        "transductive_episodes": transductive_episodes,
        "set": shared or None,
    }
    plan = build_study(read_spec_file(spec) if spec else {}, options)
    key = hashlib.sha256(json.dumps(plan.source, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = out or Path("runs") / f"study-{key}"
    _run(
        plan,
        folder,
        sweep_engine(engine, jobs, threads, plugin or [], progress and not json_output, address),
        threads,
        json_output,
        progress,
    )


def _run(
    plan: Any, folder: Path, run_engine: Engine, threads: int | None, json_output: bool, progress: bool
) -> None:
    import torch

    from fewnorm.cli.render import print_json, stderr, stdout
    from fewnorm.episodes.study import run_study
    from fewnorm.episodes.sweep_run import cores
    from fewnorm.study.tables import cell_title, results_table
    from fewnorm.study.write import HTML, MARKDOWN, write_reports

    torch.set_num_threads(threads or cores())
    invoked = "fewnorm " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "fewnorm" else ""

    def tell(what: str, done: int, total: int) -> None:
        if progress and not json_output:
            stderr.print(f"[dim]{what} ({done + 1}/{total})[/]", highlight=False)

    try:
        raw = run_study(plan, folder, run_engine, invoked=invoked, progress=tell)
    except KeyboardInterrupt as stop:  # the engine's SweepInterrupted, or Ctrl-C while measuring
        reason = str(stop) or "Ctrl-C"
        typer.echo(
            f"interrupted ({reason}); finished runs are kept: re-run the same command to resume", err=True
        )
        raise typer.Exit(130) from None
    report = write_reports(raw, folder)
    tables = [results_table(c) for c in report.cells]
    if json_output:
        print_json(
            {
                "out": str(folder),
                "markdown": str(folder / MARKDOWN),
                "html": str(folder / HTML),
                "tables": [{"caption": t.caption, "headers": t.headers, "rows": t.rows} for t in tables],
            }
        )
        return
    from rich.table import Table

    for cell, t in zip(report.cells, tables, strict=True):  # the terminal's share; the reports hold all
        keep = (1, 2, 3, 4, 8)  # normalizer, accuracy, difference, rank, status
        table = Table(title=f"{cell_title(cell)} ({cell.seeds} seeds)", title_justify="left")
        for i in keep:
            table.add_column(t.headers[i], no_wrap=i == 1)
        for row in t.rows:
            table.add_row(*(row[i] for i in keep))
        stdout.print(table)
    stdout.print(f"[dim]{folder}: {MARKDOWN}, {HTML}, study.json[/]")
