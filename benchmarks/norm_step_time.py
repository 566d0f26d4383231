"""Time one Conv-4 ProtoNet training step per normalizer, as a ratio to batchnorm.

Every normalizer is timed side by side in the same process, interleaved over
rounds (so machine noise hits all alike), and reported as the median over rounds
divided by batchnorm's median. Peak memory of a step is measured in a fresh
subprocess per normalizer (max RSS growth on CPU, max allocated on CUDA).

    python benchmarks/norm_step_time.py                 # Omniglot 28x28 and 84x84, all norms
    python benchmarks/norm_step_time.py --sizes 84 --norms batchnorm,swbn,iternorm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from fewnorm.backbones import Conv4
from fewnorm.episodes.protonet import protonet_train_step
from fewnorm.episodes.sampler import Episode
from fewnorm.norms import list_norms

SHAPES = {28: (1, 28, 28), 84: (3, 84, 84)}


def episode(size: int, ways: int, shots: int, queries: int, device: torch.device) -> Episode:
    g = torch.Generator().manual_seed(0)
    c, h, w = SHAPES[size]
    s = torch.rand(ways * shots, c, h, w, generator=g)  # (ways*shots, C, H, W)
    q = torch.rand(ways * queries, c, h, w, generator=g)  # (ways*queries, C, H, W)
    labels = torch.arange(ways)
    return Episode(
        s,
        labels.repeat_interleave(shots),
        q,
        labels.repeat_interleave(queries),
        ways,
        shots,
        queries,
    ).to(device)


def make(norm: str, size: int, device: torch.device) -> tuple[Conv4, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Conv4(SHAPES[size][0], 64, norm).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_all(norms: list[str], size: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    ep = episode(size, args.ways, args.shots, args.queries, device)
    setups = {n: make(n, size, device) for n in norms}
    for model, opt in setups.values():  # warm-up
        for _ in range(2):
            protonet_train_step(model, opt, ep)
    samples: dict[str, list[float]] = {n: [] for n in norms}
    for _ in range(args.rounds):
        for n, (model, opt) in setups.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                protonet_train_step(model, opt, ep)
            sync(device)
            samples[n].append((time.perf_counter() - t0) / args.steps)
    return {n: statistics.median(v) for n, v in samples.items()}


def peak_memory(norm: str, size: int, args: argparse.Namespace) -> float:
    """MiB of peak memory a training step adds, measured in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--memory-of",
        norm,
        "--sizes",
        str(size),
        "--device",
        args.device,
        "--ways",
        str(args.ways),
        "--shots",
        str(args.shots),
        "--queries",
        str(args.queries),
    ]
    # glibc keeps freed small-heap memory resident and reuses it, which hides a step's peak;
    # with every block over 64 KiB mmap'ed (and unmapped on free) RSS follows live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(json.loads(out.strip().splitlines()[-1])["mib"])


def _proc_status_kib(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process in KiB from /proc (Linux), else ``None``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def memory_child(norm: str, size: int, args: argparse.Namespace, device: torch.device) -> None:
    """Peak memory a steady-state training step adds above the model and its Adam state.

    One warm-up step first (it creates the Adam state and torch's one-time workspaces).
    On CPU the peak RSS is then reset (``/proc/self/clear_refs``), so the memory that
    importing torch touched and freed does not hide the step's peak.
    Without /proc the process-wide ``ru_maxrss`` is used and may read 0 for small steps.
    """
    ep = episode(size, args.ways, args.shots, args.queries, device)
    model, opt = make(norm, size, device)
    protonet_train_step(model, opt, ep)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    elif _reset_peak_rss() and (rss := _proc_status_kib("VmRSS")) is not None:
        base = rss * 1024
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        protonet_train_step(model, opt, ep)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    elif (hwm := _proc_status_kib("VmHWM")) is not None:
        peak = hwm * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sys.stdout.write(json.dumps({"mib": (peak - base) / 2**20}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--norms", default="", help="comma-separated (default: every registered)")
    parser.add_argument("--sizes", default="28,84", help="image sizes: 28 (Omniglot), 84 (miniImageNet)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-norm memory subprocesses")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.memory_of:
        memory_child(args.memory_of, sizes[0], args, device)
        return
    norms = [n for n in args.norms.split(",") if n] or [s.name for s in list_norms()]
    if "batchnorm" not in norms:
        norms.insert(0, "batchnorm")
    console = Console()
    for size in sizes:
        times = time_all(norms, size, args, device)
        base = times["batchnorm"]
        table = Table(
            title=f"Conv-4 ProtoNet training step, {args.ways}-way {args.shots}-shot "
            f"{args.queries}-query, {SHAPES[size]} on {device} "
            f"(median of {args.rounds} rounds x {args.steps} steps)"
        )
        for col in ("normalizer", "ms / step", "x batchnorm", "peak MiB"):
            table.add_column(col, justify="left" if col == "normalizer" else "right")
        for n in sorted(norms, key=times.__getitem__):
            mem = "-" if args.no_memory else f"{peak_memory(n, size, args):.1f}"
            table.add_row(n, f"{1e3 * times[n]:.1f}", f"{times[n] / base:.2f}", mem)
        console.print(table)


if __name__ == "__main__":
    main()
