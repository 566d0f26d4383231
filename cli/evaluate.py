"""``fewnorm evaluate``: re-score a checkpoint on the fixed test episodes, or on Lake's runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fewnorm.cli.train import PLUGIN_HELP
from fewnorm.errors import ConfigError
from fewnorm.names import normalize_name, unknown_name
from fewnorm.norms.plugins import load_plugins

if TYPE_CHECKING:
    from fewnorm.episodes.lake import LakeResult
    from fewnorm.episodes.reinit import HeadProtocol

BENCHMARKS = ("lake20", "lake-style")


def evaluate(
    run: Path = typer.Argument(..., help="Run directory or checkpoint file (.pt)."),
    ways: int | None = typer.Option(
        None, help="Ways (default: the run's; MAML-family runs at other ways get a fresh head)."
    ),
    shots: int | None = typer.Option(None, help="Shots (default: the run's)."),
    queries: int | None = typer.Option(None, help="Queries per class (default: the run's)."),
    episodes: int | None = typer.Option(
        None, help="Fixed test episodes (default: the run's); lake-style: runs (default 200)."
    ),
    split: str = typer.Option("test", help="Split to score: test | val."),
    data_root: Path | None = typer.Option(None, help="Data root (default: the run's, then $FEWNORM_DATA)."),
    split_file: Path | None = typer.Option(
        None, help="omniglot-vinyals: where the run's split files are now (same classes).", metavar="PATH"
    ),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    query_one_at_a_time: bool = typer.Option(
        False, "--query-one-at-a-time", help="Score each query image alone (exposes transductive norms)."
    ),
    inner_steps_test: int | None = typer.Option(None, help="MAML inner steps (default: the run's)."),
    head_init: str | None = typer.Option(
        None,
        help="MAML-family runs: the head for other --ways and lake20: proto | zero | trained "
        "(default: trained at the run's ways, else zero).",
    ),
    benchmark: str | None = typer.Option(
        None,
        help="Score on a benchmark instead of episodes: lake20 (Lake's 20 one-shot runs) | lake-style "
        "(seeded within-alphabet 20-way 1-shot runs of a fold the run did not train on).",
    ),
    val_fold: int | None = typer.Option(None, help="lake-style: the fold to score (default: the run's)."),
    ensemble: list[Path] | None = typer.Option(
        None,
        "--ensemble",
        help="lake-style, ProtoNet: another run of the fold to sum logits with (repeatable).",
    ),
    tta: int = typer.Option(0, help="lake-style, ProtoNet: mean embedding over N extra small affine views."),
    runs: Path | None = typer.Option(
        None, help="lake20: all_runs.zip or its folder (default: <data root>/omniglot/all_runs.zip)."
    ),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
) -> None:
    """Score a trained model on the same fixed episodes every run uses, or on Lake's runs."""
    load_plugins(plugin)
    _require_run_norm(run)
    if benchmark is not None:
        episodic: dict[str, object] = {"--ways": ways, "--shots": shots, "--queries": queries}
        episodic["--split"] = None if split == "test" else split
        name = normalize_name(benchmark)
        known = {normalize_name(b): b for b in BENCHMARKS}
        if name not in known:
            raise unknown_name("benchmark", benchmark, BENCHMARKS)
        chosen = known[name]
        if chosen == "lake20":
            episodic |= {"--episodes": episodes, "--val-fold": val_fold, "--ensemble": ensemble or None}
            episodic["--tta"] = tta or None
        episodic |= {"--runs": runs, "--split-file": split_file} if chosen != "lake20" else {}
        given = [flag for flag, value in episodic.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} do not apply to --benchmark {chosen} (20-way 1-shot runs)")
        lake_options = {"head_init": head_init, "inner_steps_test": inner_steps_test, "data_root": data_root}
        scoring = {"device": device, "one_at_a_time": query_one_at_a_time or None}
        if chosen == "lake20":
            from fewnorm.episodes.lake import load_lake20, score_lake20

            task = load_lake20(run, runs=runs, split_file=split_file, **lake_options)  # refusals first
            score = lambda on_stage: score_lake20(task, **scoring, on_stage=on_stage)  # noqa: E731
            _benchmark(score, task.protocol, json_output, progress)
            return
        from fewnorm.episodes.lake_style_eval import load_lake_style, score_lake_style

        style = load_lake_style(  # refusals first
            run, fold=val_fold, runs=episodes, ensemble=ensemble, tta=tta, **lake_options
        )
        _benchmark(
            lambda on_stage: score_lake_style(style, **scoring, on_stage=on_stage),
            style.protocol,
            json_output,
            progress,
        )
        return
    if val_fold is not None or ensemble or tta:
        raise ConfigError("--val-fold, --ensemble and --tta apply to --benchmark lake-style only")
    if runs is not None:
        raise ConfigError("--runs applies to --benchmark lake20 only")
    from rich.table import Table

    from fewnorm.cli.render import collapse_cell, norm_label, print_json, stdout, train_progress
    from fewnorm.episodes.reinit_eval import evaluate_with_protocol

    with train_progress(progress and not json_output) as bars:
        result, protocol = evaluate_with_protocol(
            run,
            head_init=head_init,
            ways=ways,
            shots=shots,
            queries=queries,
            episodes=episodes,
            split=split,
            data_root=data_root,
            device=device,
            overrides={
                k: v
                for k, v in {
                    "query_one_at_a_time": query_one_at_a_time or None,
                    "inner_steps_test": inner_steps_test,
                    "split_file": str(split_file) if split_file else None,
                }.items()
                if v is not None
            },
            on_stage=bars.on_stage,
        )
    if json_output:
        print_json(result.to_dict() | ({"protocol": protocol.to_dict()} if protocol else {}))
        return
    table = Table(title="fewnorm evaluation", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    c = result.config
    for key, value in (
        ("checkpoint", result.checkpoint),
        ("dataset / split", f"{c['dataset']} / {result.split}"),
        ("normalizer", norm_label(c["norm"], c["norm_options"])),
        ("ways / shots / queries", f"{result.ways} / {result.shots} / {result.queries}"),
        ("accuracy (95% CI)", collapse_cell(result.accuracy, result.collapse)),
        ("episodes", str(result.accuracy.n)),
    ):
        table.add_row(key, value)
    if protocol is not None:
        table.add_row("head protocol", protocol.label())
    stdout.print(table)


def _require_run_norm(run: Path) -> None:
    """A run whose normalizer came from a plugin not loaded now: say which ``--plugin`` to pass."""
    import yaml

    from fewnorm.norms.plugins import require_recorded_norm

    folder = run if run.is_dir() else run.parent
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return  # a bare checkpoint: the normalizer's name is checked when the model is built
    if isinstance(config, dict) and isinstance(config.get("norm"), str):
        require_recorded_norm(config["norm"], folder)


def _benchmark(
    score: Callable[[Any], LakeResult], protocol: HeadProtocol | None, json_output: bool, progress: bool
) -> None:
    """``--benchmark lake20`` or ``lake-style``: per-run errors and their mean, as a table or JSON."""
    from rich.table import Table

    from fewnorm.cli.render import norm_label, print_json, stdout, train_progress

    with train_progress(progress and not json_output) as bars:
        result = score(bars.on_stage)
    data = result.to_dict()
    if json_output:
        print_json(data)
        return
    c = result.config
    title = "Lake's one-shot runs" if data["benchmark"] == "lake20" else "Lake-style runs"
    table = Table(
        title=f"{title}: {c['dataset']}, {norm_label(c['norm'], c['norm_options'])}", title_justify="left"
    )
    for column in ("run", "correct", "error %"):
        table.add_column(column, justify="right")
    for name, correct, items, error in zip(
        result.runs, result.correct, result.items, result.errors, strict=True
    ):
        table.add_row(name, f"{correct}/{items}", f"{error:.1f}")
    table.add_section()
    interval = f" ± {data['ci95']:.2f}" if "ci95" in data else ""
    table.add_row("[bold]mean[/]", "", f"[bold green]{result.mean_error:.2f}{interval}[/]")
    stdout.print(table)
    if protocol is not None:
        stdout.print(f"head protocol: {protocol.label()}", soft_wrap=True, highlight=False)
    stdout.print(f"runs: {result.runs_path}", soft_wrap=True, highlight=False)
