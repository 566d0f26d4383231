"""``fewnorm norms`` and ``fewnorm norms show NAME``: the registry, without importing torch."""

from __future__ import annotations

import inspect
import re
import sys
import typing

import typer
from rich.markup import escape
from rich.table import Table

from fewnorm.cli.render import print_json, stderr, stdout
from fewnorm.norms import NormSpec
from fewnorm.norms.spec import NormOption

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
    """Every normalizer: name, kind, statistics and summary (papers and options: `norms show NAME`)."""
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
    table = Table(
        title=f"{len(specs)} normalizers (`fewnorm norms show NAME`: paper, options, aliases)",
        title_justify="left",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("statistics")
    table.add_column("summary", ratio=1)
    for s in specs:
        table.add_row(f"[bold]{s.name}[/]", s.kind.value, ", ".join(s.statistics), escape(plain(s.summary)))
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
                        "choices": option_choices(spec, o) or None,
                    }
                    for k, o in options.items()
                }
            }
        )
        return
    stdout.print(f"[bold]{escape(spec.name)}[/] — {escape(plain(spec.summary))}", soft_wrap=True)
    doc = _doc_summary(spec)
    if doc:
        stdout.print(escape(doc), soft_wrap=True)
    facts = [
        ("paper", spec.paper),
        ("kind", spec.kind.value),
        ("statistics", ", ".join(spec.statistics)),
        ("buffers", "yes" if spec.has_buffers else "no"),
        ("aliases", ", ".join(spec.aliases) or "none"),
        ("source", spec.source),
        ("few-shot modes", _modes_line(spec)),
        ("MAML meta-batches", spec.vmap_status()[1]),
        ("activations", spec.memory_format_status()[1]),
    ]
    for label, value in facts:
        stdout.print(f"{label}: {escape(plain(value))}", soft_wrap=True)
    if not options:
        stdout.print("options: none")
        return
    table = Table(title="options (--norm-opt key=value)", title_justify="left")
    for column in ("option", "type", "default", "allowed values"):
        table.add_column(column)
    for o in options.values():
        table.add_row(
            o.name,
            o.annotation,
            "(required)" if o.required else repr(o.default),
            " | ".join(option_choices(spec, o)) or "-",
        )
    stdout.print(table)


#: Sphinx cross-references (``:class:`~torch.nn.BatchNorm2d` ``) and inline literals.
_ROLE = re.compile(r":[\w:.-]+:`(~?)([^`<]*?)\s*(<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]*)``")
#: A parenthetical naming a file of the repository, e.g. "(benchmarks/memory_format.py measures it)".
_REPO_PATH = re.compile(r"\s*\([^()]*\b[\w.-]+/[\w./-]+\.(?:py|md|yaml)\b[^()]*\)")


def plain(text: str) -> str:
    """``text`` without Sphinx markup or references to files of the repository, for the terminal.

    ``:class:`~a.B``` -> ``B``, ``:func:`a.f``` -> ``a.f``, ````x```` -> ``x``, and
    "(benchmarks/x.py measures it)" -> "".
    """
    text = _REPO_PATH.sub("", text)
    text = _ROLE.sub(_role_text, text)
    return _LITERAL.sub(r"\1", text)


def _role_text(match: re.Match[str]) -> str:
    """A cross-reference as Sphinx shows it: its title, its last name after ``~``, else its target."""
    tilde, target, titled = match.groups()
    if titled or not tilde:
        return target
    return target.rsplit(".", 1)[-1]


def _doc_summary(spec: NormSpec) -> str:
    """The factory docstring's first paragraph, plain, unless it only says "Factory for X"."""
    doc = inspect.getdoc(spec.load()) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return "" if not first or first.lower().startswith("factory for") else plain(first)


def option_choices(spec: NormSpec, option: NormOption) -> list[str]:
    """The values ``option`` accepts, where known: ``true | false`` for a bool, the strings of a
    ``Literal[...]`` annotation, or a module-level tuple of strings holding a str option's default
    (``MODES``, ``CRITERIA``, ``VARIANTS``) in the factory's module."""
    if isinstance(option.default, bool) or option.annotation == "bool":
        return ["true", "false"]
    if option.name == "mode" and spec.modes:  # the few-shot modes it declares
        return list(spec.modes)
    parameter = inspect.signature(spec.load()).parameters.get(option.name)
    annotation = parameter.annotation if parameter is not None else None
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    text = annotation if isinstance(annotation, str) else option.annotation
    if text.startswith(("Literal[", "typing.Literal[")):  # a postponed (string) annotation
        return re.findall(r"['\"]([^'\"]*)['\"]", text)
    if not isinstance(option.default, str):
        return []
    module = sys.modules.get(getattr(spec.load(), "__module__", ""), None)
    candidates: list[tuple[str, tuple[str, ...]]] = (
        [
            (name, value)
            for name, value in vars(module).items()
            if name.isupper()
            and isinstance(value, tuple)
            and value
            and all(isinstance(v, str) for v in value)
            and option.default in value
        ]
        if module is not None
        else []
    )
    if not candidates:
        return []
    stem = option.name.upper()[:4]  # MODES for mode, CRITERIA for criterion, VARIANTS for variant
    candidates.sort(key=lambda item: not item[0].startswith(stem))
    return list(candidates[0][1])


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
