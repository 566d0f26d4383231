"""``fewnorm datasets`` and ``fewnorm datasets show NAME``: the dataset registry, without torch."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from fewnorm.cli.render import print_json, stdout
from fewnorm.data.spec import DatasetSpec

app = typer.Typer(help="List registered datasets, or show one.")


@app.callback(invoke_without_command=True)
def list_all(
    ctx: typer.Context, json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")
) -> None:
    """Every dataset: name, image shape, storage, what it supports, summary (`show NAME`: the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    from fewnorm.data.registry import list_datasets

    specs = list_datasets()
    if json_output:
        print_json([spec_dict(s) for s in specs])
        return
    table = Table(title=f"{len(specs)} datasets (`fewnorm datasets show NAME`)", title_justify="left")
    for column in ("name", "images", "storage", "supports"):
        table.add_column(column, no_wrap=column != "supports")
    table.add_column("summary", ratio=1)
    for s in specs:
        images = "x".join(map(str, s.image_shape))
        table.add_row(
            f"[bold]{s.name}[/]", images, s.storage, ", ".join(s.supports) or "-", escape(s.summary)
        )
    stdout.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="Dataset name or alias."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """One dataset: paper, image shape, files per split, how to get them, what it supports."""
    from fewnorm.data.registry import get_dataset_spec

    spec = get_dataset_spec(name)
    if json_output:
        print_json(spec_dict(spec))
        return
    stdout.print(f"[bold]{escape(spec.name)}[/] — {escape(spec.summary)}", soft_wrap=True)
    files = "; ".join(f"{split}: {', '.join(names)}" for split, names in spec.split_files.items())
    download = f"`fewnorm data download {spec.name}`" if spec.download_subset else spec.download_hint
    for label, value in (
        ("paper", spec.paper),
        ("images", "x".join(map(str, spec.image_shape)) + " (channels x height x width)"),
        ("storage", spec.storage + (f" in <data root>/{spec.folder}/" if spec.folder else "")),
        ("files", files or "-"),
        ("download", download or "-"),
        ("supports", ", ".join(spec.supports) or "-"),
        ("aliases", ", ".join(spec.aliases) or "none"),
        ("source", spec.source),
    ):
        stdout.print(f"{label}: {escape(value)}", soft_wrap=True)


def spec_dict(spec: DatasetSpec) -> dict[str, object]:
    """The JSON form of ``spec`` (its loader left out: code, not data)."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "summary": spec.summary,
        "paper": spec.paper,
        "image_shape": list(spec.image_shape),
        "storage": spec.storage,
        "folder": spec.folder,
        "split_files": {split: list(names) for split, names in spec.split_files.items()},
        "download_subset": spec.download_subset,
        "download_hint": spec.download_hint,
        "supports": list(spec.supports),
        "source": spec.source,
    }
