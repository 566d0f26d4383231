"""fewnorm's training loop against a bare PyTorch loop, and GFLOP/s against the fp32 matmul peak.

A Conv-4 ProtoNet training episode (20-way 1-shot 5-query, ``fewnorm train``'s default) on
omniglot-minimal. fewnorm: ``train()`` end to end with ``--no-progress``'s callback; an episode is
the time between two ``on_episode`` calls (all the loop does per episode, none of the run's start,
validation or test). Bare: the same weights as an ``nn.Sequential`` with torch's BatchNorm2d, the
same episodes by plain torch indexing of the same uint8 store, forward/backward/Adam by hand
(checked to draw the same episode and loss), once in NCHW and once with PyTorch's channels-last
recipe (model and inputs ``.to(memory_format=torch.channels_last)``); the loop-overhead goal is
judged against the faster of the two. Peak: ``torch.mm`` of two 2048 x 2048 fp32 matrices
(bfloat16 with ``--amp bf16``, which autocasts every side's forward passes).
Sides interleaved in one process, each round from a fresh seeded model; medians over rounds.

    python benchmarks/loop_overhead.py                # the table in docs/performance.md
    python benchmarks/loop_overhead.py --breakdown    # where fewnorm's extra time goes
    python benchmarks/loop_overhead.py --quick        # smoke run
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import _timing as timing
import torch
import torch.nn.functional as F
from rich.table import Table
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fewnorm.allocator import keep_freed_memory
from fewnorm.cli.render import train_progress
from fewnorm.config import RunConfig, resolve_config
from fewnorm.data.store import ImageStore
from fewnorm.episodes.loop import EpisodeLog, _deferred_sigint, train
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.protonet import protonet_loss, protonet_train_step
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from fewnorm.norms import norm_phase, task_scope

RATIO_GOAL, PEAK_GOAL, MM = 1.1, 0.5, 2048
Step = Callable[["Bench", nn.Module, torch.optim.Optimizer, torch.Generator], object]


def run_config(episodes: int, args: argparse.Namespace) -> RunConfig:
    """``fewnorm train``'s ProtoNet defaults, validating and testing once (one episode), at the end."""
    root = str(args.data_root) if args.data_root else None
    return resolve_config(
        overrides={"episodes": episodes, "val_every": episodes, "val_episodes": 1, "test_episodes": 1}
        | {"device": str(args.device), "data_root": root, "amp": args.amp}
    )


def fewnorm_round(args: argparse.Namespace, out: Path, n: int) -> float:
    """Seconds per training episode of ``train()``, over the ``n`` episodes after its first."""
    stamps: list[float] = []
    run_dir = Path(tempfile.mkdtemp(dir=out))
    with train_progress(enabled=False) as bars:  # what `fewnorm train --no-progress` passes

        def on_episode(log: EpisodeLog) -> None:
            bars.on_episode(log)
            stamps.append(time.perf_counter())

        train(run_config(n + 1, args), run_dir, on_episode=on_episode)
    shutil.rmtree(run_dir)
    return (stamps[-1] - stamps[0]) / n


class BareSampler:
    """The episodes ``EpisodeSampler`` draws from the same generator, by plain torch indexing."""

    def __init__(self, store: ImageStore, ways: int, shots: int, queries: int, device: torch.device) -> None:
        self.store, self.ways, self.shots, self.queries, self.device = store, ways, shots, queries, device
        self.max_size = int(store.class_sizes.max())
        self.support_labels = torch.arange(ways, device=device).repeat_interleave(shots)  # (ways*shots,)
        self.query_labels = torch.arange(ways, device=device).repeat_interleave(queries)  # (ways*queries,)

    def __call__(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        s, ways, k, shape = self.store, self.ways, self.shots + self.queries, self.store.image_shape
        classes = torch.randperm(s.num_classes, generator=g)[:ways]
        keys = torch.rand(ways, self.max_size, generator=g)
        keys.masked_fill_(torch.arange(self.max_size) >= s.class_sizes[classes][:, None], 2.0)
        rows = s.class_starts[classes][:, None] + keys.argsort(dim=1)[:, :k]  # (ways, k)
        x = s.images[rows.flatten()].to(self.device).float().div_(255.0).view(ways, k, *shape)
        return x[:, : self.shots].reshape(-1, *shape), x[:, self.shots :].reshape(-1, *shape)


def bare_model(model: nn.Module, nhwc: bool = False) -> nn.Sequential:
    """``model`` (fewnorm's Conv-4, batchnorm) as conv, torch BatchNorm2d, ReLU, max-pool x 4.

    ``nhwc``: PyTorch's channels-last recipe, ``model.to(memory_format=torch.channels_last)``
    (the inputs follow in :func:`bare_nhwc_step`).
    """
    layers: list[nn.Module] = []
    for conv, norm, *_ in model.blocks:
        bn = nn.BatchNorm2d(conv.out_channels, eps=norm.eps, momentum=norm.momentum).to(conv.weight.device)
        bn.load_state_dict(norm.state_dict(), strict=False)  # torch's adds num_batches_tracked
        layers += [copy.deepcopy(conv), bn, nn.ReLU(), nn.MaxPool2d(2)]
    bare = nn.Sequential(*layers, nn.Flatten())
    return bare.to(memory_format=torch.channels_last) if nhwc else bare


def bare_loss(model: nn.Module, support: Tensor, query: Tensor, b: BareSampler) -> Tensor:
    z_support, z_query = model(support), model(query)  # (ways*shots, D), (ways*queries, D)
    protos = z_support.view(b.ways, b.shots, -1).mean(1)  # (ways, D)
    return F.cross_entropy(-(z_query[:, None] - protos[None]).pow(2).sum(-1), b.query_labels)


def bare_update(
    bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, support: Tensor, query: Tensor
) -> Tensor:
    """Forward, backward and Adam on one episode's images, as a hand-written loop does them.

    With ``--amp``, PyTorch's recipe: the forward under ``torch.autocast``, the backward outside.
    """
    opt.zero_grad()
    with torch.autocast(bench.device.type, dtype=torch.bfloat16, enabled=bench.amp):
        loss = bare_loss(model, support, query, bench.bare)
    loss.float().backward()
    opt.step()
    return loss.detach()


def bare_step(bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> Tensor:
    return bare_update(bench, model, opt, *bench.bare(g))


def bare_nhwc_step(bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> Tensor:
    """:func:`bare_step` with the recipe's ``x.contiguous(memory_format=torch.channels_last)`` inputs."""
    support, query = (x.contiguous(memory_format=torch.channels_last) for x in bench.bare(g))
    return bare_update(bench, model, opt, support, query)


def loss_step(bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> None:
    opt.zero_grad()
    protonet_loss(model, bench.episode(g))[0].backward()
    opt.step()


def train_step(bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> None:
    protonet_train_step(model, opt, bench.episode(g))


def sampler_step(bench: Bench, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> None:
    bench.algorithm.train_step(model, opt, [bench.sampler.sample(g).to(bench.device)])


#: The breakdown: each row adds one of fewnorm's pieces; (label, torch BatchNorm2d model, step).
LADDER: tuple[tuple[str, bool, Step], ...] = (
    ("bare loop (torch BatchNorm2d)", True, bare_step),
    ("+ fewnorm Conv-4 module", False, bare_step),
    ("+ protonet_loss (task_scope, phases, accuracy)", False, loss_step),
    ("+ protonet_train_step (train(), 2x .item())", False, train_step),
    ("+ EpisodeSampler, Episode.to, train_step", False, sampler_step),
)


class Bench:
    """Both sides' starting points, built as ``train()`` builds them."""

    def __init__(self, store: ImageStore, args: argparse.Namespace) -> None:
        c = self.config = run_config(2, args)
        self.plan = plan_run(c)
        self.store, self.device, self.algorithm = store, args.device, self.plan.algorithm
        self.amp = args.amp == "bf16"
        self.sampler = EpisodeSampler(store, c.effective_train_ways, c.effective_train_shots, c.train_queries)
        self.bare = BareSampler(store, self.sampler.ways, self.sampler.shots, c.train_queries, args.device)

    def model(self, bare: bool, nhwc: bool = False, *, float32: bool = False) -> nn.Module:
        """A fresh seeded model; ``float32`` ignores ``--amp`` (the equality check runs without it)."""
        plan = plan_run(self.config.model_copy(update={"amp": None})) if float32 else self.plan
        torch.manual_seed(plan.config.seed)
        model = plan.build_model(self.store.image_shape[0]).to(self.device)
        return bare_model(model, nhwc) if bare else model

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed)

    def episode(self, g: torch.Generator) -> Episode:
        """The bare sampler's episode as a fewnorm Episode."""
        (support, query), b = self.bare(g), self.bare
        return Episode(support, b.support_labels, query, b.query_labels, b.ways, b.shots, b.queries)

    def rounds_of(self, step: Step, bare: bool, nhwc: bool = False) -> timing.RoundFn:
        """Per round: a fresh model, Adam and generator; one untimed episode, then ``n`` timed."""

        def run(n: int) -> float:
            model, g = self.model(bare, nhwc), self.generator()
            opt = torch.optim.Adam(model.parameters(), lr=self.config.lr)
            step(self, model, opt, g)
            return timing.per_call(partial(step, self, model, opt, g), self.device)(n)

        return run

    def check_same(self) -> int:
        """FLOPs of one step; exits non-zero unless both sides draw the same episode and loss.

        In float32 whatever ``--amp`` says: bfloat16 rounding would hide a real difference.
        """
        amp, self.amp = self.amp, False
        ours, (support, query) = (
            self.sampler.sample(self.generator()).to(self.device),
            self.bare(self.generator()),
        )
        if not (torch.equal(ours.support, support) and torch.equal(ours.query, query)):
            raise SystemExit("error: the bare sampler drew other episodes than EpisodeSampler")
        model = self.model(bare=False, float32=True)
        expected = protonet_train_step(model, self.algorithm.optimizer(model, self.config), ours).loss
        for nhwc, step in ((False, bare_step), (True, bare_nhwc_step)):
            model = self.model(bare=True, nhwc=nhwc, float32=True)
            loss = float(step(self, model, torch.optim.Adam(model.parameters()), self.generator()))
            # float32 sums in another order on the other layout: 2e-5 apart measured, not 1e-7
            if abs(loss - expected) > 1e-4 * abs(expected):
                message = f"the bare loop's first loss {loss} differs from fewnorm's {expected}"
                raise SystemExit(f"error: {message}")
        with FlopCounterMode(display=False) as counter:
            bare_loss(model, support, query, self.bare).backward()
        self.amp = amp
        return int(counter.get_total_flops())


def main_table(bench: Bench, flops: int, out: Path, args: argparse.Namespace) -> Table:
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float32  # the peak of the step's precision
    a, b = (torch.randn(MM, MM, device=args.device, dtype=dtype) for _ in range(2))
    cases = {
        "fewnorm": (partial(fewnorm_round, args, out), args.episodes),
        "bare": (bench.rounds_of(bare_step, bare=True), args.episodes),
        "bare-nhwc": (bench.rounds_of(bare_nhwc_step, bare=True, nhwc=True), args.episodes),
        "mm": (timing.per_call(partial(torch.mm, a, b), args.device), 3),
    }
    t = timing.interleaved(cases, args.rounds)
    # The goal is judged against the faster bare loop: a user can write either.
    fastest = min(t["bare"], t["bare-nhwc"])
    peak, ratio = 2 * MM**3 / t["mm"], t["fewnorm"] / fastest
    title = (
        f"Conv-4 ProtoNet training episode, 20w1s5q, {flops / 1e9:.2f} GFLOP per step "
        f"(median of {args.rounds} rounds x {args.episodes} episodes)"
    )
    table = timing.new_table(
        title, "side", "ms / episode", "x bare", "x faster bare", "GFLOP/s", "of peak", "goal"
    )
    layout = bench.plan.decisions["layout"].reason.split(":")[0]
    sides = (
        ("fewnorm", f"fewnorm train() loop ({layout})"),
        ("bare", "bare PyTorch loop (NCHW)"),
        ("bare-nhwc", "bare loop, channels_last recipe"),
    )
    for name, label in sides:
        share = flops / t[name] / peak
        goal = "-"
        if name == "fewnorm":
            goal = timing.goal_cell(ratio <= RATIO_GOAL, f"<= {RATIO_GOAL}x") + ", "
            goal += timing.goal_cell(share >= PEAK_GOAL, f">= {PEAK_GOAL:.0%} of peak")
        cells = (f"{1e3 * t[name]:.1f}", f"{t[name] / t['bare']:.3f}", f"{t[name] / fastest:.3f}")
        table.add_row(label, *cells, f"{flops / t[name] / 1e9:.1f}", f"{share:.0%}", goal)
    mm_label = f"torch.mm {MM}x{MM} {str(dtype).removeprefix('torch.')} (peak)"
    table.add_row(mm_label, f"{1e3 * t['mm']:.1f}", "-", "-", f"{peak / 1e9:.1f}", "100%", "-")
    return table


def ladder_table(bench: Bench, out: Path, args: argparse.Namespace) -> Table:
    cases = {label: (bench.rounds_of(step, bare), args.episodes) for label, bare, step in LADDER}
    cases["fewnorm train() loop"] = (partial(fewnorm_round, args, out), args.episodes)
    t = timing.interleaved(cases, args.rounds)
    title = f"Where the time goes: fewnorm's pieces added one at a time (median of {args.rounds} rounds)"
    table = timing.new_table(title, "variant", "ms / episode", "added ms", "x bare")
    names = list(t)
    for i, name in enumerate(names):
        added = f"{1e3 * (t[name] - t[names[i - 1]]):+.2f}" if i else "-"
        table.add_row(name, f"{1e3 * t[name]:.2f}", added, f"{t[name] / t[names[0]]:.3f}")
    return table


def pieces_table(bench: Bench, args: argparse.Namespace) -> Table:
    g, scalar = bench.generator(), torch.ones((), requires_grad=True) * 2.0
    episode = bench.sampler.sample(g)
    phases = (task_scope, partial(norm_phase, "support"), partial(norm_phase, "query"))
    with train_progress(enabled=False) as bars:
        calls = {
            "bare sampling": partial(bench.bare, g),
            "EpisodeSampler.sample": partial(bench.sampler.sample, g),
            "Episode.to(device)": partial(episode.to, bench.device),
            "task_scope + 2 norm_phase": timing.inside(*phases),
            "2x .item() (CPU: no sync)": lambda: (scalar.item(), scalar.item()),
            "deferred Ctrl-C (signal.signal x2)": timing.inside(_deferred_sigint),
            "progress callback (--no-progress)": partial(bars.on_episode, EpisodeLog(1, 10**9, 1.0, 0.5)),
        }
        runs = {name: timing.per_call(fn, bench.device) for name, fn in calls.items()}
        t = timing.interleaved(
            {k: (run, timing.calibrate(run, 0.05)) for k, run in runs.items()}, args.rounds
        )
    table = timing.new_table(
        f"The per-episode pieces alone (median of {args.rounds} rounds)", "piece", "µs / call"
    )
    for name, seconds in t.items():
        table.add_row(name, f"{1e6 * seconds:.1f}")
    return table


def main() -> None:
    parser = timing.base_parser(__doc__, "7; quick 2")
    parser.add_argument(
        "--episodes", type=timing.positive_int, default=None, help="timed episodes a round (15; quick 4)"
    )
    parser.add_argument("--breakdown", action="store_true", help="also time fewnorm's pieces one by one")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.episodes = args.episodes or (4 if args.quick else 15)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fewnorm train sets malloc; process-wide, so every side gets it
    bench = Bench(timing.require_store("omniglot-minimal", "train", args.data_root), args)
    console = timing.console()
    timing.print_header(console, args)
    flops = bench.check_same()
    with tempfile.TemporaryDirectory(prefix="fewnorm-loop-overhead-") as out:
        console.print(main_table(bench, flops, Path(out), args))
        if args.breakdown:
            console.print(ladder_table(bench, Path(out), args), pieces_table(bench, args))
    console.print(f"done; {timing.machine_line()}")


if __name__ == "__main__":
    main()
