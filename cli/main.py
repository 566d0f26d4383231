"""The ``fewnorm`` console script: thin Typer commands; torch is imported inside command bodies."""

from __future__ import annotations

import logging
import shutil
import sys
from typing import Any

import typer
from typer._click import Context
from typer.core import TyperGroup

from fewnorm.errors import FewnormError


class _FewnormGroup(TyperGroup):
    """Turns a :class:`FewnormError` from any command into one line on stderr and exit 2."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except FewnormError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="fewnorm",
    cls=_FewnormGroup,
    help="Few-shot learning with any normalization layer: train, evaluate, compare, probe, norms, "
    "algorithms, data, datasets, backbones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_commands() -> None:
    from fewnorm.cli import (
        algorithms,
        backbones,
        compare,
        data,
        datasets,
        evaluate,
        norms,
        probe,
        study,
        train,
    )

    app.command()(train.train)
    app.command()(evaluate.evaluate)
    app.command()(compare.compare)
    app.command()(probe.probe)
    app.command()(study.study)
    app.add_typer(norms.app, name="norms")
    app.add_typer(algorithms.app, name="algorithms")
    app.add_typer(data.app, name="data")
    app.add_typer(datasets.app, name="datasets")
    app.add_typer(backbones.app, name="backbones")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages to stderr."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


_register_commands()


#: Terminal columns from which ``--help`` draws rich panels; narrower, rich's option table cuts
#: long option names (``--meta-batch,--episodes…``), so help is click's plain list, which wraps.
RICH_HELP_COLUMNS = 120


def help_markup_mode(columns: int | None = None) -> Any:
    """``"rich"`` help panels on terminals at least :data:`RICH_HELP_COLUMNS` wide, else plain help.

    ``columns`` defaults to the terminal's width (``$COLUMNS`` first; 80 when not a terminal).
    """
    if columns is None:
        columns = shutil.get_terminal_size(fallback=(80, 24)).columns
    return "rich" if columns >= RICH_HELP_COLUMNS else None


def main() -> None:
    """Console-script entry point; a torchrun worker that ran a process group ends by ``exit_now``."""
    app.rich_markup_mode = help_markup_mode()
    try:
        app(prog_name="fewnorm")
    except SystemExit as done:
        torchrun = sys.modules.get("fewnorm.torchrun")  # imported (with torch) only by a run
        if torchrun is not None and torchrun.closed_a_group():
            torchrun.exit_now(done.code)
        raise


if __name__ == "__main__":
    main()
