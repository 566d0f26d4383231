"""``fewnorm compare``: train every normalizer under identical settings, in parallel, resumably.

The sweep directory (``--out``, default ``runs/compare-<hash of the settings>``)
holds one run directory per (normalizer, seed). Re-running the same command
skips finished and diverged runs, resumes interrupted ones from their
``last.pt`` and restarts broken ones. ``--jobs N`` trains N runs at once in
spawned processes, each with ``--threads`` torch threads (default: cores // N);
``--engine ray`` submits each run as a Ray task instead (:mod:`fewnorm.episodes.sweep_ray`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fewnorm.cli.train import ALGO_HELP, PLUGIN_HELP, SPLIT_FILE_HELP, dataset_options
from fewnorm.errors import ConfigError
from fewnorm.norms.plugins import load_plugins

if TYPE_CHECKING:
    from rich.table import Table

    from fewnorm.compare import Row, Sweep


def parse_scoped_options(pairs: list[str] | None) -> dict[str, dict[str, str]]:
    """``["groupnorm:groups=8"]`` -> ``{"groupnorm": {"groups": "8"}}`` (typed by the spec later)."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs or []:
        name, colon, option = pair.partition(":")
        key, eq, value = option.partition("=")
        if not colon or not eq or not name.strip() or not key.strip():
            raise ConfigError(f"--norm-opt expects name:key=value (e.g. groupnorm:groups=8), got '{pair}'")
        out.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return out


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` for any run-configuration key; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def compare(
    norms: str | None = typer.Option(
        None, help="Comma-separated normalizers, e.g. batchnorm,swbn,patchnorm."
    ),
    sweep: Path | None = typer.Option(None, "--sweep", help="Sweep YAML (config keys + norms:, seeds:)."),
    seeds: int | None = typer.Option(None, help="Seeds per normalizer: seed, seed+1, ... (default 1)."),
    baseline: str | None = typer.Option(None, help="Normalizer the paired differences are taken to."),
    jobs: int = typer.Option(
        0, help="Runs trained at once, each in a spawned process (0: min(cores, runs, 4); 1: in-process)."
    ),
    threads: int | None = typer.Option(
        None, help="Torch threads per run (default: cores // jobs; 1 with --engine ray: the CPUs it asks)."
    ),
    engine: str = typer.Option("local", help="Where runs train: local (a process pool) | ray (Ray tasks)."),
    address: str | None = typer.Option(
        None, help="Ray cluster of --engine ray: auto (`ray start` here) or HOST:PORT (default: a new one)."
    ),
    algo: str | None = typer.Option(None, help=ALGO_HELP),
    algos: str | None = typer.Option(
        None, help="Comma-separated algorithms: a grid of every normalizer under each (labels algo-norm)."
    ),
    dataset: str | None = typer.Option(None, help="Dataset (default omniglot-minimal)."),
    split_file: Path | None = typer.Option(None, help=SPLIT_FILE_HELP, metavar="PATH"),
    backbone: str | None = typer.Option(None, help="Backbone (default conv4)."),
    hidden: int | None = typer.Option(None, help="Filters per Conv-4 block."),
    ways: int | None = typer.Option(None, help="Ways of validation and test episodes."),
    shots: int | None = typer.Option(None, help="Support images per class."),
    queries: int | None = typer.Option(None, help="Query images per class at validation/test."),
    train_ways: int | None = typer.Option(None, help="Ways of training episodes."),
    train_queries: int | None = typer.Option(None, help="Queries per class in training."),
    episodes: int | None = typer.Option(None, help="Training episodes per run (compare's default: 300)."),
    lr: float | None = typer.Option(None, help="Adam learning rate."),
    val_every: int | None = typer.Option(None, help="Validate (and checkpoint) every N episodes (100)."),
    val_episodes: int | None = typer.Option(None, help="Fixed validation episodes (compare's default: 50)."),
    test_episodes: int | None = typer.Option(None, help="Fixed test episodes (600)."),
    seed: int | None = typer.Option(None, help="First seed."),
    augment: bool | None = typer.Option(
        None, "--augment/--no-augment", help="Augment training episodes (crop, colour jitter, flip)."
    ),
    setting: list[str] | None = typer.Option(
        None, "--set", help="Any run-configuration key=value (repeatable), e.g. --set meta_batch=4."
    ),
    norm_opt: list[str] | None = typer.Option(
        None, "--norm-opt", help="Option of one normalizer, name:key=value (repeatable)."
    ),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    device: str | None = typer.Option(None, help="cpu | cuda | cuda:N."),
    data_root: Path | None = typer.Option(
        None, help="Data root (else $FEWNORM_DATA, else `fewnorm data link`'s, else the user cache)."
    ),
    out: Path | None = typer.Option(None, help="Sweep directory (default runs/compare-<settings hash>)."),
    plots: bool = typer.Option(True, help="Write accuracy.png and curves.png (needs matplotlib)."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    progress: bool = typer.Option(True, help="Show progress on stderr."),
) -> None:
    """Train several normalizers on identical episodes and compare them with paired statistics."""
    from fewnorm.compare import build_sweep, read_sweep_file
    from fewnorm.episodes.sweep_run import check_engine, check_parallelism

    load_plugins(plugin)
    check_parallelism(jobs, threads)
    engine = check_engine(engine, address, jobs)
    if engine == "ray":
        from fewnorm.episodes.sweep_ray import require_ray

        require_ray()  # before the sweep is built: a missing Ray is the first thing to say
    overrides = parse_settings(setting) | {
        k: v
        for k, v in {
            "algo": algo,
            **dataset_options(dataset, split_file),
            "backbone": backbone,
            "hidden": hidden,
            "ways": ways,
            "shots": shots,
            "queries": queries,
            "train_ways": train_ways,
            "train_queries": train_queries,
            "episodes": episodes,
            "lr": lr,
            "val_every": val_every,
            "val_episodes": val_episodes,
            "test_episodes": test_episodes,
            "seed": seed,
            "augment": augment,
            "device": device,
            "data_root": str(data_root) if data_root else None,
        }.items()
        if v is not None
    }
    plan = build_sweep(
        read_sweep_file(sweep) if sweep else None,
        overrides,
        norms=[n.strip() for n in norms.split(",") if n.strip()] if norms else None,
        norm_options=parse_scoped_options(norm_opt),
        seeds=seeds,
        baseline=baseline,
        algos=[a.strip() for a in algos.split(",") if a.strip()] if algos else None,
    )
    run_sweep(plan, out or Path("runs") / f"compare-{plan.key()}", jobs, threads, plugin, progress,
              plots, json_output, engine=engine, address=address)  # fmt: skip


def run_sweep(
    sweep: Sweep,
    out: Path,
    jobs: int,
    threads: int | None,
    plugins: list[str] | None,
    progress: bool,
    plots: bool,
    json_output: bool,
    *,
    engine: str = "local",
    address: str | None = None,
) -> None:
    """Run the sweep (:func:`fewnorm.episodes.sweep_run.run_sweep`) and render its results."""
    from fewnorm.cli.render import print_json, stdout
    from fewnorm.cli.sweep_view import sweep_display
    from fewnorm.compare import row_record
    from fewnorm.episodes.sweep import SweepInterrupted
    from fewnorm.episodes.sweep_run import run_sweep as run
    from fewnorm.episodes.sweep_run import sweep_title

    try:
        outcome = run(sweep, out, jobs=jobs, threads=threads, plugins=plugins, engine=engine,
                      address=address, display=sweep_display(progress and not json_output, out),
                      plots=plots)  # fmt: skip
    except SweepInterrupted as stop:
        typer.echo(
            f"interrupted ({stop}); finished runs are kept: re-run the same command to resume", err=True
        )
        raise typer.Exit(130) from None
    rows = outcome.rows
    if json_output:
        print_json({"out": str(out), "baseline": sweep.baseline, "rows": [row_record(r) for r in rows]})
        return
    stdout.print(results_table(rows, sweep, sweep_title(sweep)))
    for row in rows:  # a collapsed row is no finding: say why next to the table
        if row.status.startswith("collapsed"):
            stdout.print(f"[red]{row.label}[/]: {row.message}")
    written = "results.csv, results.json" + (", accuracy.png, curves.png" if plots else "")
    stdout.print(f"[dim]{out}: {written}[/]")


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def results_table(rows: list[Row], sweep: Sweep, title: str) -> Table:
    """Sorted by accuracy; the difference is paired by (seed, episode) with the baseline."""
    from rich.table import Table

    several = len(sweep.seeds) > 1
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("normalizer", style="bold cyan")
    table.add_column("accuracy % (95% CI)", justify="right")
    table.add_column(f"Δ vs {sweep.baseline} (paired)", justify="right")
    if several:
        table.add_column("seeds (t 95%)", justify="right")
    table.add_column("ms/ep", justify="right")
    table.add_column("params", justify="right")
    table.add_column("status")
    for i, r in enumerate(rows, 1):
        acc = f"{_pct(r.accuracy.mean)} ± {_pct(r.accuracy.ci95)}" if r.accuracy else "-"
        if r.label == sweep.baseline:
            diff = "[dim]baseline[/]"
        elif r.difference is None:
            diff = "-"
        else:
            d = r.difference
            style = ("green" if d.mean > 0 else "red") if r.significant else "dim"
            diff = f"[{style}]{100 * d.mean:+.2f} ± {_pct(d.ci95)}[/]"
        cells = [str(i), r.label, acc, diff]
        if several:
            cells.append(f"± {_pct(r.seed_spread.ci95)}" if r.seed_spread else "-")
        ms = f"{1e3 * r.seconds_per_episode:.0f}" if r.seeds else "-"
        status = r.status if r.status == "ok" else f"[red]{r.status}[/]"
        table.add_row(*cells, ms, f"{r.parameters:,}" if r.seeds else "-", status)
    return table
