"""Train a Conv-4 ProtoNet per normalizer on the same episodes and print a table.

Every normalizer gets the same configuration, seeds, training episodes and fixed
test episodes (so differences are paired); accuracy is the mean over the fixed
test episodes with its 95% interval. Run directories go under ``--out``.

    python benchmarks/protonet_norms.py --norms swbn,patchnorm,iternorm,tasknorm-i
    python benchmarks/protonet_norms.py --episodes 30 --test-episodes 50   # NaN check for all
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fewnorm.config import resolve_config
from fewnorm.episodes.loop import train
from fewnorm.errors import FewnormError
from fewnorm.norms import list_norms


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--norms", default="", help="comma-separated (default: every registered)")
    parser.add_argument("--dataset", default="omniglot-minimal")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=None, help="default: fewnorm train's")
    parser.add_argument("--test-episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-protonet-norms"))
    args = parser.parse_args()
    norms = [n for n in args.norms.split(",") if n] or [s.name for s in list_norms()]
    table = Table(
        title=f"Conv-4 ProtoNet on {args.dataset}, {args.ways}-way {args.shots}-shot, "
        f"{args.test_episodes} fixed test episodes, seed {args.seed}"
    )
    for column in ("normalizer", "test accuracy", "best val", "ms / episode", "wall s", "status"):
        table.add_column(column)
    for norm in norms:
        overrides = {
            "dataset": args.dataset,
            "norm": norm,
            "ways": args.ways,
            "shots": args.shots,
            "episodes": args.episodes,
            "test_episodes": args.test_episodes,
            "seed": args.seed,
        }
        config = resolve_config(None, overrides)
        run_dir = args.out / norm
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        try:
            s = train(config, run_dir)
        except FewnormError as exc:
            table.add_row(norm, "-", "-", "-", f"{time.perf_counter() - started:.0f}", f"failed: {exc}")
            continue
        finite = all(math.isfinite(a) for a in s.test_accuracies)
        table.add_row(
            norm,
            str(s.test),
            f"{100 * s.best_val_accuracy:.2f}%",
            f"{1e3 * s.train_seconds_per_episode:.0f}",
            f"{s.wall_seconds:.0f}",
            "ok" if finite else "non-finite",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
