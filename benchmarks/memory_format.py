"""NCHW against NHWC ("channels last") activations: a Conv-4 ProtoNet step per normalizer.

For every registered normalizer (or ``--norms``), one model is built twice from the
same seed, once with ``channels_last=False`` and once with ``True``, and a training
step (forward, backward, Adam) on one synthetic episode is timed for each, the two
interleaved over rounds in one process; the table gives the medians, the NHWC
speed-up, and what the normalizer declares (``NormSpec.channels_last``, which
``fewnorm train`` follows unless told ``--channels-last/--no-channels-last``).
A declaration is flagged when the measurement disagrees with it by more than
``--margin`` (the machines are noisy: rerun before changing one).

    python benchmarks/memory_format.py                        # 28x28, 20-way 1-shot 5-query
    python benchmarks/memory_format.py --norms batchnorm,groupnorm --sizes 28,84
"""

from __future__ import annotations

from functools import partial

import _timing as timing
import torch
from norm_step_time import SHAPES, episode

from fewnorm.allocator import keep_freed_memory
from fewnorm.backbones import Conv4
from fewnorm.episodes.protonet import protonet_train_step
from fewnorm.norms import get_norm, list_norms
from fewnorm.precision import autocast_forward


def step_fn(
    norm: str, size: int, channels_last: bool, ways: int, device: torch.device, amp: str
) -> timing.RoundFn:
    """A round function of ProtoNet training steps with ``norm``, NHWC or not, from seed 0."""
    torch.manual_seed(0)
    model = autocast_forward(Conv4(SHAPES[size][0], 64, norm, channels_last=channels_last), amp).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    task = episode(size, ways, 1, 5, device)
    return timing.per_call(partial(protonet_train_step, model, optimizer, task), device)


def main() -> None:
    parser = timing.base_parser(__doc__, "5; quick 2")
    parser.add_argument("--norms", default="", help="comma-separated (default: every registered normalizer)")
    parser.add_argument("--sizes", default="28", help="comma-separated image sizes: 28 (1 channel), 84 (3)")
    parser.add_argument("--ways", type=timing.positive_int, default=20)
    parser.add_argument("--round-seconds", type=float, default=0.4, help="seconds a side per round")
    parser.add_argument("--margin", type=float, default=0.1, help="speed-up band treated as a tie")
    args = parser.parse_args()
    names = [n.strip() for n in args.norms.split(",") if n.strip()] or [s.name for s in list_norms()]
    specs = [get_norm(n) for n in names]  # an unknown name fails here, in one line
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or set(sizes) - set(SHAPES):
        parser.error(f"--sizes takes {', '.join(map(str, SHAPES))}, got '{args.sizes}'")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fewnorm train sets malloc; process-wide, so every side gets it
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = 0.1 if args.quick else args.round_seconds
    console = timing.console()
    timing.print_header(console, args)
    for size in sizes:
        title = (
            f"Conv-4 ProtoNet step, {args.ways}-way 1-shot 5-query, {size}x{size}: ms per step "
            f"(median of {rounds} rounds), NCHW against NHWC"
            + ("" if args.amp == "none" else f", forward passes autocast to {args.amp}")
        )
        table = timing.new_table(title, "normalizer", "NCHW", "NHWC", "NHWC speed-up", "declared", "")
        for spec in specs:
            sides = {
                layout: step_fn(spec.name, size, layout == "nhwc", args.ways, args.device, args.amp)
                for layout in ("nchw", "nhwc")
            }
            t = timing.interleaved(
                {k: (run, timing.calibrate(run, seconds)) for k, run in sides.items()}, rounds
            )
            speedup = t["nchw"] / t["nhwc"]
            measured = None if abs(speedup - 1) <= args.margin else speedup > 1
            agrees = measured is None or measured == spec.channels_last
            table.add_row(
                spec.name,
                f"{1e3 * t['nchw']:.1f}",
                f"{1e3 * t['nhwc']:.1f}",
                f"{speedup:.2f}x",
                "NHWC" if spec.channels_last else "NCHW",
                "" if agrees else "[bold red]disagrees[/]",
            )
        console.print(table)
    console.print(f"done; {timing.machine_line()}")


if __name__ == "__main__":
    main()
