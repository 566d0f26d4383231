"""The sweep display of ``fewnorm compare`` and ``fewnorm study``: the engines' events drawn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fewnorm.episodes.sweep import Event, Task


def _plain_sweep_lines(runs: int, console: Any) -> Callable[[Event], None]:
    """Sweep progress as plain lines, for a stderr that is not a terminal."""
    finished = [0]

    def show(event: Event) -> None:
        kind, name, *rest = event
        if kind == "start":
            console.print(f"{name}: training {rest[0]} episodes", markup=False, highlight=False)
        elif kind == "done":
            finished[0] += rest[0] != "interrupted"
            detail = f" {rest[1]}" if rest[0] != "ok" and rest[1] else ""
            console.print(
                f"{name}: {rest[0]}{detail} ({finished[0]}/{runs} runs)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    return show


@contextmanager
def sweep_progress(tasks: list[Task], enabled: bool) -> Iterator[Callable[[Event], None]]:
    """One display for the sweep: an overall bar over every training episode, one bar per active run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fewnorm.cli.render import stderr

    if enabled and not stderr.is_terminal:  # a log file: a line per run started and finished
        yield _plain_sweep_lines(len(tasks), stderr)
        return
    total = sum(t.config["episodes"] for t in tasks)
    progress = Progress(
        TextColumn("[bold]{task.description:>22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=not enabled,
    )
    overall = progress.add_task("sweep", total=total, what=f"0/{len(tasks)} runs")
    bars: dict[str, Any] = {}
    seen: dict[str, int] = {}
    finished = [0]

    def show(event: Event) -> None:
        kind, name, *rest = event
        if kind == "start":
            bars[name] = progress.add_task(name, total=rest[0], what="train")
            seen[name] = 0
        elif kind == "episode" and name in bars:
            progress.update(bars[name], completed=rest[0], what="train")
            progress.advance(overall, rest[0] - seen[name])
            seen[name] = rest[0]
        elif kind == "stage" and name in bars:
            progress.update(bars[name], what=f"{rest[0]} {rest[1]}/{rest[2]}")
        elif kind == "done":
            if name in bars:
                progress.remove_task(bars.pop(name))
            finished[0] += rest[0] != "interrupted"
            progress.update(overall, what=f"{finished[0]}/{len(tasks)} runs")
            if rest[0] != "ok":
                progress.console.print(f"{name}: [red]{rest[0]}[/] {rest[1]}")

    with progress:
        yield show


def sweep_display(enabled: bool, out: Any) -> Callable[[list[Task], int], Any]:
    """The ``display`` of :func:`fewnorm.episodes.sweep_run.run_sweep`: says what is reused, then draws."""
    import typer

    @contextmanager
    def display(tasks: list[Task], planned: int) -> Iterator[Callable[[Event], None]]:
        if len(tasks) < planned:
            typer.echo(f"{planned - len(tasks)}/{planned} runs already done in {out}; skipped", err=True)
        with sweep_progress(tasks, enabled) as show:
            yield show

    return display
