"""Rich rendering shared by the commands: progress bars, summary tables, JSON output."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from fewnorm.episodes.loop import EpisodeLog, RunSummary

stdout = Console()
stderr = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine-readable output: JSON alone on stdout."""
    stdout.file.write(json.dumps(data, indent=2, default=str) + "\n")


def norm_label(norm: str, options: dict[str, Any]) -> str:
    """``batchnorm (mode=transductive)``: the normalizer with its options and BatchNorm mode."""
    from fewnorm.norms import get_norm

    spec = get_norm(norm)
    shown = dict(options)
    known = spec.options()
    if "mode" in known and "mode" not in shown:
        shown["mode"] = known["mode"].default
    inner = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{spec.name} ({inner})" if inner else spec.name


class TrainProgress:
    """One bar for training (loss, accuracy, episodes/s, ETA) and one per evaluation stage.

    Evaluation stages show their episode count, speed and ETA; a loss and an accuracy appear
    only where they are known (the training bar's running values), never as ``nan``.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.train_task: TaskID | None = None

    def on_episode(self, log: EpisodeLog) -> None:
        if self.train_task is None:
            self.train_task = self.progress.add_task("train", total=log.total, loss=None, acc=None)
        self.progress.update(self.train_task, completed=log.episode, loss=log.loss, acc=log.accuracy)

    def on_stage(self, name: str, total: int) -> Callable[[int], None]:
        task = self.progress.add_task(name, total=total, loss=None, acc=None)

        def advance(done: int) -> None:
            self.progress.update(task, completed=done)
            if done >= total:
                self.progress.remove_task(task)

        return advance


def known_metrics(loss: Any, accuracy: Any) -> str:
    """``loss 0.512  acc 0.812``, leaving out what is unknown (``None`` or not finite)."""
    parts = [
        f"{label} {value:.3f}"
        for label, value in (("loss", loss), ("acc", accuracy))
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    return "  ".join(parts)


class _MetricsColumn(ProgressColumn):
    """``loss 0.512  acc 0.812`` where known; blank for a stage that has no running values yet."""

    def render(self, task: Task) -> Text:
        return Text(known_metrics(task.fields.get("loss"), task.fields.get("acc")))


class PlainProgress:
    """Progress as plain lines, for a stderr that is not a terminal (a log file, CI, ``nohup``).

    Training prints its first episode, every ``1/lines`` of the run and its last; each
    evaluation stage prints one line when it ends, with its episodes and seconds.
    """

    def __init__(self, console: Console, lines: int = 20) -> None:
        self.console = console
        self.lines = lines
        self.started: float | None = None
        self.first = 0

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_episode(self, log: EpisodeLog) -> None:
        now = time.perf_counter()
        if self.started is None:  # speed counts from the first episode seen (a resumed run's too)
            self.started, self.first = now, log.episode
        step = max(1, log.total // self.lines)
        if log.episode != 1 and log.episode % step and log.episode != log.total:
            return
        line = f"train {log.episode}/{log.total}  {known_metrics(log.loss, log.accuracy)}"
        if log.episode > self.first and now > self.started:
            line += f"  {(log.episode - self.first) / (now - self.started):.1f} ep/s"
        self._say(line)

    def on_stage(self, name: str, total: int) -> Callable[[int], None]:
        started = time.perf_counter()

        def advance(done: int) -> None:
            if done >= total:
                self._say(f"{name} {done}/{total} episodes in {time.perf_counter() - started:.1f} s")

        return advance


class _SpeedColumn(ProgressColumn):
    """Episodes per second (blank until rich has a speed estimate)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:5.1f} ep/s" if task.speed else "", style="dim")


@contextmanager
def train_progress(
    enabled: bool = True, console: Console | None = None
) -> Iterator[TrainProgress | PlainProgress]:
    """Progress bars on ``console`` (stderr) when it is a terminal, plain lines when it is not."""
    console = console or stderr
    if enabled and not console.is_terminal:
        yield PlainProgress(console)
        return
    progress = Progress(
        TextColumn("[bold]{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        _MetricsColumn(),
        _SpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield TrainProgress(progress)


def _validation_row(cfg: Any, summary: RunSummary) -> tuple[str, str]:
    """The best validation score: accuracy on val episodes, or the lake-style error of the fold's runs."""
    at = f"(episode {summary.best_val_episode})"
    if cfg.val_protocol is None:
        return "best validation accuracy", f"{100 * summary.best_val_accuracy:.2f}% {at}"
    error = 100 * (1 - summary.best_val_accuracy)
    return f"best lake-style error (fold {cfg.val_fold})", f"{error:.2f}% {at}, {cfg.val_episodes} runs"


def summary_table(summary: RunSummary) -> Table:
    from fewnorm.config import RunConfig

    c = summary.config
    cfg = RunConfig.model_validate(c)
    table = Table(title="fewnorm run summary", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    rows = [
        ("dataset", c["dataset"]),
        ("algorithm", f"{c['algo']} ({c['backbone']}, hidden {c['hidden']})"),
        ("normalizer", norm_label(c["norm"], c["norm_options"])),
        ("ways / shots / queries", f"{c['ways']} / {c['shots']} / {c['queries']}"),
        (
            "training ways / shots / queries",
            f"{cfg.effective_train_ways} / {cfg.effective_train_shots} / {cfg.train_queries}",
        ),
        ("training episodes", str(c["episodes"])),
        *_meta_batch_rows(cfg, summary),
        ("activations", _decision(summary, "layout")),
        ("precision", _decision(summary, "precision")),
        _validation_row(cfg, summary),
        ("test accuracy (95% CI)", collapse_cell(summary.test, summary.collapse)),
        ("test episodes", str(summary.test.n)),
        ("parameters", f"{summary.parameters:,}"),
        ("torch threads", str(c.get("threads") or "torch default")),
        (
            "wall time",
            f"{summary.wall_seconds:.1f} s ({1e3 * summary.train_seconds_per_episode:.1f} ms/episode)",
        ),
        ("run directory", summary.run_dir),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def collapse_cell(accuracy: Any, collapse: dict[str, str] | None) -> str:
    """An accuracy, or the accuracy marked collapsed with its likely cause and what to try."""
    if collapse is None:
        return f"[bold green]{accuracy}[/]"
    return (
        f"[bold red]{accuracy}  COLLAPSED[/]: {collapse['reason']}\n"
        f"likely cause: {collapse['cause']}\ntry: {collapse['advice']}"
    )


def _decision(summary: RunSummary, name: str) -> str:
    """The reason the run's plan gave for decision ``name`` (``summary.json``'s ``plan``)."""
    return str(summary.plan[name]["reason"]) if name in summary.plan else "not recorded"


#: Decisions a method adds to its plan, with the summary row that shows each (plan order).
METHOD_ROWS = (("inner_loop", "inner loop"), ("finetuning", "fine-tuning"))


def _meta_batch_rows(config: Any, summary: RunSummary) -> list[tuple[str, str]]:
    """How the method trained: a meta-batch (vectorized or the per-task loop) and its buffers, or
    minibatches of every training class; and what its own plan decisions say (Reptile, Baseline)."""
    rows = []
    if "vectorized" in summary.plan:
        rows += [
            ("meta-batch", f"{config.meta_batch} tasks per step; {_decision(summary, 'vectorized')}"),
            ("buffers", _decision(summary, "buffers")),
        ]
    if "pretraining" in summary.plan:
        classes = f"{config.pretrain_classes} training classes" if config.pretrain_classes else "every class"
        rows.append(("pre-training", f"{config.batch_size} images of {classes} per step"))
    return rows + [(label, _decision(summary, key)) for key, label in METHOD_ROWS if key in summary.plan]
