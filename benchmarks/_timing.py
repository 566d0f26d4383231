"""Timing helpers shared by the comparison benchmarks (vs_learn2learn.py, loop_overhead.py).

A *round function* ``run(n) -> seconds per unit`` does ``n`` units of work and
returns the time per unit. :func:`interleaved` calls every side's round
function in turn, round after round (A B A B ...), so machine noise hits all
sides alike, and reports the median over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import torch
from norm_step_time import sync  # the device synchronization norm_step_time.py times with
from rich.console import Console
from rich.table import Table

from fewnorm.data import load_split
from fewnorm.data.store import ImageStore
from fewnorm.errors import FewnormError
from fewnorm.precision import slow_amp_reason

#: ``run(n)``: do ``n`` units of work, return seconds per unit.
RoundFn = Callable[[int], float]


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def base_parser(doc: str | None, rounds: str) -> argparse.ArgumentParser:
    """The options every comparison benchmark takes; ``rounds`` describes the default rounds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=positive_int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=None, help=f"interleaved rounds ({rounds})")
    parser.add_argument("--quick", action="store_true", help="smoke run (about 20 s on a quiet machine)")
    parser.add_argument("--data-root", type=Path, default=None, help="default: $FEWNORM_DATA")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument(
        "--amp",
        choices=("none", "bf16"),
        default="none",
        help="autocast every side's forward passes (fewnorm train --amp; default none)",
    )
    return parser


def require_store(dataset: str, split: str, root: Path | None) -> ImageStore:
    """The uint8 store of ``dataset``'s ``split``, or exit with one line saying how to get it."""
    try:
        return load_split(dataset, split, root)
    except FewnormError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None


def per_call(fn: Callable[[], object], device: torch.device) -> RoundFn:
    """A round function timing ``n`` back-to-back calls of ``fn`` (device synchronized)."""

    def run(n: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / n

    return run


def calibrate(run: RoundFn, seconds: float) -> int:
    """Units per round so that one round of ``run`` takes about ``seconds`` (at least 1).

    The first call is a warm-up; the estimate comes from a second call of about a
    tenth of the target.
    """
    first = run(1)
    estimate = run(max(1, int(0.1 * seconds / max(first, 1e-9))))
    return max(1, round(seconds / max(min(first, estimate), 1e-9)))


def interleaved(
    cases: Mapping[str, tuple[RoundFn, int]], rounds: int, *, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per unit of each case ``name: (run, units per round)`` over interleaved rounds."""
    if warmup:
        for run, _ in cases.values():
            run(1)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (run, units) in cases.items():
            samples[name].append(run(units))
    return {name: statistics.median(values) for name, values in samples.items()}


def inside(*contexts: Callable[[], AbstractContextManager[object]]) -> Callable[[], None]:
    """A call that enters and leaves ``contexts`` (nested) with nothing inside: their own cost."""

    def run() -> None:
        with ExitStack() as stack:
            for make in contexts:
                stack.enter_context(make())

    return run


def console() -> Console:
    """A console for the tables: the terminal's width, or 120 columns when written to a file."""
    out = Console()
    return out if out.is_terminal else Console(width=120)


def new_table(title: str, *columns: str) -> Table:
    """A table whose first column is left-aligned and the others right-aligned."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i else "left")
    return table


def goal_cell(ok: bool, goal: str) -> str:
    """``goal`` marked pass or FAIL (rich markup)."""
    return f"{goal} [green]pass[/]" if ok else f"{goal} [bold red]FAIL[/]"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def print_header(out: Console, args: argparse.Namespace) -> None:
    """The machine line, and a warning when ``--amp`` is emulated on this device (slow, not a result)."""
    out.print(machine_line())
    slow = slow_amp_reason(args.amp, args.device)
    if slow is not None:
        out.print(f"[bold yellow]warning:[/] {slow}")


def machine_line() -> str:
    """Torch version, threads, CPU and load average: the caption of every table."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} x {_cpu_name()}, load average {load}"
    )
