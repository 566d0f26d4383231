"""Peak memory of a second-order MAML meta-step: vectorized (vmap) against the per-task loop.

The speed issue's bound: adapting a meta-batch's tasks together may hold no more than the
meta-batch's activations beyond what the per-task loop holds (the loop frees each task's
graph after its backward). For each (meta-batch, inner steps), each side in a fresh process:

- ``loop``, ``vmap`` (one vmap call a step) and ``vmap-chunked`` (``fewnorm train``'s default,
  ``DEFAULT_VECTORIZE_CHUNKS`` calls a step, each freed after its backward): the peak of one
  meta-step above the memory in use just before it
  (CPU: the process's ``ru_maxrss`` high-water mark against its RSS, with the malloc
  settings of ``fewnorm train``; CUDA: ``torch.cuda.max_memory_allocated``);
- ``activations``: the bytes autograd keeps for one task's meta-gradient in the loop (every
  tensor saved for backward, the inner gradient's graph included, each storage once,
  through ``torch.autograd.graph.saved_tensors_hooks``), times the meta-batch.

Goal, for the default: ``vmap - loop <= meta-batch x one task's activations``. Conv-4 as ``fewnorm train
--algo maml`` builds it (``--norm``, default transductive BatchNorm), Omniglot 5-way 1-shot
5-query.

    python benchmarks/maml_memory.py                 # meta-batch 4, 8, 32; 1 and 5 inner steps
    python benchmarks/maml_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

CASES = ((4, 1), (8, 1), (32, 1), (4, 5), (32, 5))  # (meta-batch, inner steps)
MB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(
    side: str, batch: int, steps: int, device_name: str, data_root: Path | None, norm: str
) -> dict[str, Any]:
    """In a child process: one meta-step of ``side`` (loop, vmap) or one task's saved bytes."""
    import torch

    from fewnorm.allocator import keep_freed_memory
    from fewnorm.config import DEFAULT_VECTORIZE_CHUNKS, resolve_config
    from fewnorm.data import load_split
    from fewnorm.episodes.algorithms import get_algorithm
    from fewnorm.episodes.maml import InnerLoop, maml_task_loss, maml_train_step
    from fewnorm.episodes.sampler import EpisodeSampler

    keep_freed_memory()
    torch.set_num_threads(2)
    device = torch.device(device_name)
    store = load_split("omniglot-minimal", "train", data_root)
    config = resolve_config(overrides={"algo": "maml", "ways": 5, "shots": 1, "inner_lr": 0.4, "norm": norm})
    torch.manual_seed(0)
    model = get_algorithm(config).build(config, store.image_shape[0]).to(device)
    sampler = EpisodeSampler(store, 5, 1, 5, split="train")
    generator = torch.Generator().manual_seed(1)
    episodes = [sampler.sample(generator).to(device) for _ in range(batch)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    chunks = DEFAULT_VECTORIZE_CHUNKS if side == "vmap-chunked" else 1
    loop = InnerLoop(lr=0.4, steps=steps, vectorize=side.startswith("vmap"), chunks=chunks)
    if side == "activations":
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            maml_task_loss(model, episodes[0], loop)
        return {"bytes": sum(storages.values())}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        maml_train_step(model, optimizer, episodes, loop)
        torch.cuda.synchronize(device)
        return {"bytes": torch.cuda.max_memory_allocated(device) - before}
    before = _rss_bytes()
    maml_train_step(model, optimizer, episodes, loop)
    return {"bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}


def child(side: str, batch: int, steps: int, args: argparse.Namespace) -> int:
    cmd = [sys.executable, __file__, "--measure", side, "--batch", str(batch), "--steps", str(steps)]
    cmd += ["--device", args.device, "--norm", args.norm]
    cmd += ["--data-root", str(args.data_root)] if args.data_root else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["bytes"])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--norm", default="batchnorm", help="normalizer (default batchnorm, transductive)")
    parser.add_argument("--data-root", type=Path, default=None, help="default: $FEWNORM_DATA")
    parser.add_argument("--quick", action="store_true", help="meta-batch 4 and 8, one inner step")
    parser.add_argument(
        "--measure", choices=("loop", "vmap", "vmap-chunked", "activations"), help=argparse.SUPPRESS
    )
    parser.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # a measuring child: one number as JSON on stdout
        result = measure(args.measure, args.batch, args.steps, args.device, args.data_root, args.norm)
        sys.stdout.write(json.dumps(result) + "\n")
        return

    import _timing as timing

    console = timing.console()
    console.print(timing.machine_line())
    from fewnorm.config import DEFAULT_VECTORIZE_CHUNKS

    n = DEFAULT_VECTORIZE_CHUNKS
    what = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    table = timing.new_table(
        f"Second-order MAML meta-step memory, {args.norm}, on {args.device} ({what} above the step's "
        "start, MB); "
        f"goal: vmap - loop <= meta-batch x one task's activations, for the default {n} vmap calls a step",
        "batch", "steps", "loop", "vmap, 1 call", f"vmap, {n} calls", f"- loop ({n} calls)",
        "one task's activations", "x batch", "goal",
    )  # fmt: skip
    cases = [c for c in CASES if not args.quick or (c[0] <= 8 and c[1] == 1)]
    for batch, steps in cases:
        sides = ("loop", "vmap", "vmap-chunked", "activations")
        loop, vmap, chunked, task = (child(side, batch, steps, args) for side in sides)
        bound = batch * task
        table.add_row(
            str(batch), str(steps), f"{loop / MB:.0f}", f"{vmap / MB:.0f}", f"{chunked / MB:.0f}",
            f"{(chunked - loop) / MB:.0f}", f"{task / MB:.1f}", f"{bound / MB:.0f}",
            timing.goal_cell(chunked - loop <= bound, "<="),
        )  # fmt: skip
    console.print(table)
    console.print(f"done; {timing.machine_line()}")


if __name__ == "__main__":
    main()
