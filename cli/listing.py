"""``fewnorm <registry>`` and ``fewnorm <registry> show NAME`` for any spec registry, without torch.

A command module declares what its specs show (table columns, ``show`` lines, the JSON
form); :func:`registry_app` makes the two commands, so every registry lists alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fewnorm.cli.render import print_json, stdout

#: A spec's value for one column or ``show`` line, as text.
Field = Callable[[Any], str]


@dataclass(frozen=True)
class Listing:
    """What ``fewnorm <plural>`` shows of each spec of one registry."""

    kind: str  # "algorithm"
    plural: str  # "algorithms"
    specs: Callable[[], Sequence[Any]]  # every registered spec, in listing order
    lookup: Callable[[str], Any]  # a spec by name or alias (closest match if unknown)
    to_dict: Callable[[Any], dict[str, object]]  # the JSON form (code left out)
    columns: Sequence[tuple[str, Field]]  # table columns between name and summary
    details: Sequence[tuple[str, Field]]  # `show NAME` lines after the summary


def joined(values: Sequence[str], empty: str = "-") -> str:
    return ", ".join(values) or empty


def registry_app(listing: Listing, help: str) -> typer.Typer:
    """The Typer group listing ``listing``'s registry, with its ``show NAME`` command."""
    app = typer.Typer(help=help)

    @app.callback(invoke_without_command=True)
    def list_all(
        ctx: typer.Context, json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")
    ) -> None:
        if ctx.invoked_subcommand is not None:
            return
        specs = listing.specs()
        if json_output:
            print_json([listing.to_dict(s) for s in specs])
            return
        title = f"{len(specs)} {listing.plural} (`fewnorm {listing.plural} show NAME`)"
        table = Table(title=title, title_justify="left")
        table.add_column("name", no_wrap=True)
        for header, _ in listing.columns:
            table.add_column(header, no_wrap=header != "supports")
        table.add_column("summary", ratio=1)
        for s in specs:
            cells = [get(s) for _, get in listing.columns]
            table.add_row(f"[bold]{s.name}[/]", *cells, escape(s.summary))
        stdout.print(table)

    list_all.__doc__ = f"Every {listing.kind}: name, {', '.join(h for h, _ in listing.columns)}, summary."

    @app.command()
    def show(
        name: str = typer.Argument(..., help=f"{listing.kind.capitalize()} name or alias."),
        json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
    ) -> None:
        spec = listing.lookup(name)
        if json_output:
            print_json(listing.to_dict(spec))
            return
        stdout.print(f"[bold]{escape(spec.name)}[/] — {escape(spec.summary)}", soft_wrap=True)
        for label, get in (
            ("paper", lambda s: s.paper),
            *listing.details,
            ("aliases", lambda s: joined(s.aliases, "none")),
            ("source", lambda s: s.source),
        ):
            stdout.print(f"{label}: {escape(get(spec))}", soft_wrap=True)

    show.__doc__ = f"One {listing.kind}: paper, " + ", ".join(h for h, _ in listing.details) + ", source."
    return app
