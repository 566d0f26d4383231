"""``fewnorm algorithms`` and ``fewnorm algorithms show NAME``: the algorithm registry, without torch."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fewnorm.algorithms import AlgorithmSpec
from fewnorm.cli.render import print_json, stdout

app = typer.Typer(help="List registered few-shot algorithms, or show one.")


@app.callback(invoke_without_command=True)
def list_all(
    ctx: typer.Context, json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")
) -> None:
    """Every algorithm: name, family, what it supports, summary (`algorithms show NAME`: the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    from fewnorm.algorithms import list_algorithms

    specs = list_algorithms()
    if json_output:
        print_json([spec_dict(s) for s in specs])
        return
    table = Table(title=f"{len(specs)} algorithms (`fewnorm algorithms show NAME`)", title_justify="left")
    for column in ("name", "family", "supports"):
        table.add_column(column, no_wrap=column != "supports")
    table.add_column("summary", ratio=1)
    for s in specs:
        table.add_row(f"[bold]{s.name}[/]", s.family, ", ".join(s.supports) or "-", escape(s.summary))
    stdout.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="Algorithm name or alias."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """One algorithm: paper, family, defaults, the normalizer mode it runs, what it supports."""
    from fewnorm.algorithms import get_algorithm_spec

    spec = get_algorithm_spec(name)
    if json_output:
        print_json(spec_dict(spec))
        return
    stdout.print(f"[bold]{escape(spec.name)}[/] — {escape(spec.summary)}", soft_wrap=True)
    defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "the common ones"
    for label, value in (
        ("paper", spec.paper),
        ("family", spec.family),
        ("defaults", defaults),
        ("normalizer mode", spec.norm_mode or "each normalizer's own default"),
        ("supports", ", ".join(spec.supports) or "-"),
        ("aliases", ", ".join(spec.aliases) or "none"),
        ("source", spec.source),
    ):
        stdout.print(f"{label}: {escape(value)}", soft_wrap=True)


def spec_dict(spec: AlgorithmSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its factory left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "family": spec.family,
        "summary": spec.summary,
        "paper": spec.paper,
        "defaults": dict(spec.defaults),
        "norm_mode": spec.norm_mode,
        "supports": list(spec.supports),
        "source": spec.source,
    }
