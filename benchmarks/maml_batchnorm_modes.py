"""MAML with each BatchNorm mode (and its alternatives), queries scored together and one at a time.

Reproduces the ordering of Bronskill et al., "TaskNorm: Rethinking Batch
Normalization for Meta-Learning", ICML 2020 (Table 1, MAML on Omniglot 5-way
1-shot) with short trainings: conventional (``running``) BatchNorm near chance,
``transductive`` BatchNorm high but falling towards chance when each query is
scored alone, instance and layer norm in between, and the non-transductive
normalizers (``support``-mode BatchNorm, TaskNorm) unchanged by scoring queries
one at a time. Every row gets the same seeds, training episodes and fixed test
episodes, so differences are paired. Run directories go under ``--out``.

    python benchmarks/maml_batchnorm_modes.py                      # the recorded table
    python benchmarks/maml_batchnorm_modes.py --episodes 50 --test-episodes 20   # smoke test
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fewnorm.config import resolve_config
from fewnorm.episodes.evaluation import evaluate_checkpoint
from fewnorm.episodes.loop import train

log = logging.getLogger("maml_batchnorm_modes")

#: (row label, normalizer, options, buffer policy)
ROWS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("batchnorm running (per_task buffers)", "batchnorm", {"mode": "running"}, "per_task"),
    ("batchnorm running (global buffers)", "batchnorm", {"mode": "running"}, "global"),
    ("batchnorm transductive", "batchnorm", {"mode": "transductive"}, "per_task"),
    ("instancenorm", "instancenorm", {}, "per_task"),
    ("layernorm", "layernorm", {}, "per_task"),
    ("batchnorm support (MetaBN)", "batchnorm", {"mode": "support"}, "per_task"),
    ("tasknorm-i", "tasknorm-i", {}, "per_task"),
)


def run_row(
    label: str, norm: str, options: dict[str, Any], policy: str, args: argparse.Namespace
) -> tuple[str, ...]:
    config = resolve_config(
        None,
        {
            "algo": "maml",
            "dataset": args.dataset,
            "norm": norm,
            "norm_options": options,
            "buffer_policy": policy,
            "ways": 5,
            "shots": 1,
            "episodes": args.episodes,
            "meta_batch": args.meta_batch,
            "lr": args.lr,
            "val_every": args.episodes,  # one validation, at the end: the test is on the last weights
            "val_episodes": args.val_episodes,
            "test_episodes": args.test_episodes,
            "seed": args.seed,
        },
    )
    run_dir = args.out / label.split(" (")[0].replace(" ", "-") / policy
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = train(config, run_dir)
    alone = evaluate_checkpoint(run_dir, overrides={"query_one_at_a_time": True}).accuracy
    log.info("%s: together %s, alone %s", label, summary.test, alone)
    together = summary.test
    return (
        label,
        f"{100 * together.mean:.1f} ± {100 * together.ci95:.1f}",
        f"{100 * alone.mean:.1f} ± {100 * alone.ci95:.1f}",
        f"{100 * (alone.mean - together.mean):+.1f}",
        f"{1e3 * summary.train_seconds_per_episode:.0f}",
        f"{time.perf_counter() - started:.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="omniglot-minimal")
    parser.add_argument("--episodes", type=int, default=500, help="outer steps per row")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val-episodes", type=int, default=20)
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--rows", default="", help="comma-separated row numbers (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-maml-batchnorm-modes"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    picked = [int(i) for i in args.rows.split(",") if i] or list(range(len(ROWS)))
    table = Table(
        title=f"MAML, Conv-4, {args.dataset} 5-way 1-shot: {args.episodes} outer steps x "
        f"{args.meta_batch} tasks, Adam {args.lr:g}, inner lr 0.4, 1 step (3 at test); "
        f"{args.test_episodes} fixed test episodes, 15 queries per class, seed {args.seed}"
    )
    for column in ("normalizer", "queries together %", "one at a time %", "change", "ms / step", "wall s"):
        table.add_column(column)
    for i in picked:
        table.add_row(*run_row(*ROWS[i], args))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
