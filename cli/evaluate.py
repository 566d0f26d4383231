"""``fewnorm evaluate``: re-score a checkpoint on the fixed test episodes."""

from __future__ import annotations

from pathlib import Path

import typer

from fewnorm.cli.train import PLUGIN_HELP, load_plugins


def evaluate(
    run: Path = typer.Argument(..., help="Run directory or checkpoint file (.pt)."),
    ways: int | None = typer.Option(None, help="Ways (default: the run's)."),
    shots: int | None = typer.Option(None, help="Shots (default: the run's)."),
    queries: int | None = typer.Option(None, help="Queries per class (default: the run's)."),
    episodes: int | None = typer.Option(None, help="Fixed test episodes (default: the run's)."),
    split: str = typer.Option("test", help="Split to score: test | val."),
    data_root: Path | None = typer.Option(None, help="Data root (default: the run's, then $FEWNORM_DATA)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    query_one_at_a_time: bool = typer.Option(
        False, "--query-one-at-a-time", help="Score each query image alone (exposes transductive norms)."
    ),
    inner_steps_test: int | None = typer.Option(None, help="MAML inner steps (default: the run's)."),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    progress: bool = typer.Option(True, help="Show a progress bar on stderr."),
) -> None:
    """Score a trained model on the same fixed episodes every run uses."""
    load_plugins(plugin)
    from rich.table import Table

    from fewnorm.cli.render import norm_label, print_json, stdout, train_progress
    from fewnorm.episodes.evaluation import evaluate_checkpoint

    with train_progress(progress and not json_output) as bars:
        result = evaluate_checkpoint(
            run,
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
                }.items()
                if v is not None
            },
            on_stage=bars.on_stage,
        )
    if json_output:
        print_json(result.to_dict())
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
        ("accuracy (95% CI)", f"[bold green]{result.accuracy}[/]"),
        ("episodes", str(result.accuracy.n)),
    ):
        table.add_row(key, value)
    stdout.print(table)
