"""``fewnorm norms`` and ``fewnorm norms show NAME``: the registry, without importing torch."""

from __future__ import annotations

import inspect

import typer
from rich.table import Table

from fewnorm.cli.render import print_json, stderr, stdout
from fewnorm.norms import NormSpec

app = typer.Typer(help="List registered normalizers, or show one's options.")

PLUGIN_HELP = "Load normalizer registration code from FILE.py or package.module (repeatable)."


def _load(plugins: list[str] | None) -> None:
    from fewnorm.norms import load_plugin

    for target in plugins or []:
        load_plugin(target)


@app.callback(invoke_without_command=True)
def list_all(
    ctx: typer.Context,
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Table of every normalizer: name, aliases, kind, statistics, buffers, paper, source."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = plugin
        return
    from fewnorm.norms import list_norms
    from fewnorm.norms.plugins import FAILURES

    _load(plugin)
    specs = list_norms()
    if json_output:
        print_json([_spec_dict(s) for s in specs])
        return
    table = Table(title=f"{len(specs)} normalizers", title_justify="left")
    for column in ("name", "aliases", "kind", "statistics", "buffers", "paper", "source"):
        table.add_column(column, overflow="fold")
    for s in specs:
        table.add_row(
            f"[bold]{s.name}[/]",
            ", ".join(s.aliases),
            s.kind.value,
            ", ".join(s.statistics),
            "yes" if s.has_buffers else "no",
            s.paper,
            s.source,
        )
    stdout.print(table)
    for failure in FAILURES:
        stderr.print(f"[yellow]plugin {failure.plugin} failed to load:[/] {failure.error}")


@app.command()
def show(
    name: str = typer.Argument(..., help="Normalizer name or alias."),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """One normalizer: its metadata and its options with defaults."""
    from fewnorm.norms import get_norm

    _load(plugin)
    spec = get_norm(name)
    options = spec.options()
    if json_output:
        print_json(
            _spec_dict(spec)
            | {
                "options": {
                    k: {
                        "default": None if o.required else o.default,
                        "type": o.annotation,
                        "required": o.required,
                    }
                    for k, o in options.items()
                }
            }
        )
        return
    stdout.print(f"[bold]{spec.name}[/] — {spec.summary}")
    stdout.print(
        f"paper: {spec.paper}\nkind: {spec.kind.value}   statistics: "
        f"{', '.join(spec.statistics)}   buffers: {'yes' if spec.has_buffers else 'no'}   "
        f"source: {spec.source}"
    )
    if spec.aliases:
        stdout.print(f"aliases: {', '.join(spec.aliases)}")
    stdout.print(f"few-shot modes: {_modes_line(spec)}")
    stdout.print(f"MAML meta-batches: {spec.vmap_status()[1]}")
    stdout.print(f"activations: {spec.memory_format_status()[1]}")
    table = Table(title="options (--norm-opt key=value)", title_justify="left")
    for column in ("option", "type", "default"):
        table.add_column(column)
    for o in options.values():
        table.add_row(o.name, o.annotation, "(required)" if o.required else repr(o.default))
    stdout.print(table if options else "options: none")
    doc = inspect.getdoc(spec.load())
    if doc:
        stdout.print(doc.splitlines()[0])


def _modes_line(spec: NormSpec) -> str:
    """The few-shot modes (``--norm-opt mode=...``), the defaults, and the buffers' roles."""
    from fewnorm.norms.fewshot import MAML_MODE

    if not spec.modes:
        return "none (no batch statistics)"
    line = (
        f"{', '.join(spec.modes)} (--norm-opt mode=...); default {spec.default_mode()}, "
        f"MAML family {spec.default_mode(MAML_MODE)}"
    )
    if spec.learned_buffers:
        line += f"; learned across tasks: {', '.join(spec.learned_buffers)}"
    return line


def _spec_dict(spec: NormSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "kind": spec.kind.value,
        "statistics": list(spec.statistics),
        "has_buffers": spec.has_buffers,
        "phase_aware": spec.phase_aware,
        "vmap": spec.vmap,
        "modes": list(spec.modes),
        "learned_buffers": list(spec.learned_buffers),
        "meta_batch": spec.vmap_status()[1],
        "channels_last": spec.channels_last,
        "activations": spec.memory_format_status()[1],
        "summary": spec.summary,
        "paper": spec.paper,
        "source": spec.source,
    }
