"""``fewnorm backbones`` and ``fewnorm backbones show NAME``: the backbone registry, without torch."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fewnorm.backbones.registry import BackboneSpec
from fewnorm.cli.render import print_json, stdout

app = typer.Typer(help="List registered backbones, or show one.")


@app.callback(invoke_without_command=True)
def list_all(
    ctx: typer.Context, json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")
) -> None:
    """Every backbone: name, the options it takes, summary (`backbones show NAME`: the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    from fewnorm.backbones.registry import list_backbones

    specs = list_backbones()
    if json_output:
        print_json([spec_dict(s) for s in specs])
        return
    table = Table(title=f"{len(specs)} backbones (`fewnorm backbones show NAME`)", title_justify="left")
    for column in ("name", "options"):
        table.add_column(column, no_wrap=True)
    table.add_column("summary", ratio=1)
    for s in specs:
        table.add_row(f"[bold]{s.name}[/]", ", ".join(s.options) or "-", escape(s.summary))
    stdout.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="Backbone name or alias."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """One backbone: paper, the options it takes, aliases, where it comes from."""
    from fewnorm.backbones.registry import get_backbone_spec

    spec = get_backbone_spec(name)
    if json_output:
        print_json(spec_dict(spec))
        return
    stdout.print(f"[bold]{escape(spec.name)}[/] — {escape(spec.summary)}", soft_wrap=True)
    for label, value in (
        ("paper", spec.paper),
        ("options", ", ".join(spec.options) or "none"),
        ("aliases", ", ".join(spec.aliases) or "none"),
        ("source", spec.source),
    ):
        stdout.print(f"{label}: {escape(value)}", soft_wrap=True)


def spec_dict(spec: BackboneSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its factory left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "paper": spec.paper,
        "options": list(spec.options),
        "source": spec.source,
    }
