"""fewnorm against learn2learn: episode sampling and second-order MAML meta-steps.

Both sides run in one process on the same data, interleaved over rounds
(A B A B ...) after a warm-up; each table reports the median over rounds.

- Sampling: fewnorm's ``EpisodeSampler`` against learn2learn's ``TaskDataset``
  (NWays, KShots, LoadData, RemapLabels, ConsecutiveLabels) plus
  ``partition_task`` into support and query, over a ``MetaDataset`` of the same
  images: omniglot-minimal's training store, converted to float once, served as
  ``(image tensor, label)`` with the class index given up front.
- MAML: one second-order meta-step (Conv-4 built as ``fewnorm train --algo maml``
  builds it, transductive BatchNorm, Omniglot 5-way 1-shot, Adam outside) by
  ``maml_train_step`` with ``vectorize=True`` and ``False`` (on NHWC activations, as
  ``fewnorm train`` runs BatchNorm, and the loop once more on NCHW), and by
  ``learn2learn.algorithms.MAML`` clone/adapt on NCHW (torch's default layout) with
  the textbook block order (ReLU before the pool, as learn2learn's ``ConvBlock``;
  fewnorm pools first, the same function), on deep copies of one model's weights and
  identical tasks. Meta-gradients are checked equal before anything is timed.

    python benchmarks/vs_learn2learn.py              # the tables in docs/performance.md
    python benchmarks/vs_learn2learn.py --quick      # smoke run
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from dataclasses import replace
from functools import partial
from typing import Any

import _timing as timing
import torch
import torch.nn.functional as F
from rich.table import Table
from torch import Tensor, nn

from fewnorm.allocator import keep_freed_memory
from fewnorm.backbones.conv4 import textbook_order
from fewnorm.config import DEFAULT_VECTORIZE_CHUNKS, resolve_config
from fewnorm.data.store import ImageStore
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.maml import InnerLoop, maml_train_step
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from fewnorm.interop.learn2learn import INSTALL_HINT

SAMPLING = ((5, 1, 15), (20, 1, 5))  # (ways, shots, queries)
MAML_CASES = ((32, 1), (32, 5), (4, 1), (4, 5))  # (meta-batch, inner steps)
SAMPLING_GOAL, MAML_GOAL, GOAL_META_BATCH = 20.0, 2.0, 32
RTOL = 1e-5
#: fewnorm's sides: (name, InnerLoop.vectorize, backbone on NHWC as fewnorm train chooses it)
SIDES = (("vmap", True, True), ("loop", False, True), ("loop nchw", False, False))


def import_learn2learn() -> Any:
    """learn2learn, without the unrelated notice its gym dependency prints on import."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn
    except ImportError:
        sys.stderr.write(f"error: {INSTALL_HINT}\n")
        raise SystemExit(2) from None
    return learn2learn


class StoreImages(torch.utils.data.Dataset[tuple[Tensor, int]]):
    """The store as a torch Dataset of ``(float image (C, H, W) in [0, 1], class)``, decoded once."""

    def __init__(self, store: ImageStore) -> None:
        self.images = store.images.float().div_(255.0)  # (N, C, H, W)
        self.labels = torch.repeat_interleave(torch.arange(store.num_classes), store.class_sizes).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], self.labels[index]


def l2l_episode_fn(l2l: Any, meta: Any, ways: int, shots: int, queries: int) -> Any:
    """One learn2learn episode per call: a task of ways x (shots + queries), split into support/query."""
    tf = l2l.data.transforms
    tasks = l2l.data.TaskDataset(
        meta,
        task_transforms=[
            tf.NWays(meta, ways),
            tf.KShots(meta, shots + queries),
            tf.LoadData(meta),
            tf.RemapLabels(meta),
            tf.ConsecutiveLabels(meta),
        ],
        num_tasks=-1,  # a fresh task per call, as fewnorm's training sampler
    )

    def sample() -> Any:
        x, y = tasks.sample()
        return l2l.data.utils.partition_task(x, y, shots=shots)

    return sample


def store_metadataset(l2l: Any, store: ImageStore) -> Any:
    """A learn2learn MetaDataset of the store's images, its class index given up front."""
    bounds = zip(store.class_starts.tolist(), store.class_sizes.tolist(), strict=True)
    index = {c: list(range(start, start + size)) for c, (start, size) in enumerate(bounds)}
    return l2l.data.MetaDataset(StoreImages(store), labels_to_indices=index)


def sampling_table(l2l: Any, store: ImageStore, rounds: int, round_seconds: float) -> Table:
    meta = store_metadataset(l2l, store)
    title = f"Episode sampling, omniglot-minimal train (median of {rounds} rounds)"
    table = timing.new_table(title, "episode", "fewnorm µs", "learn2learn µs", "speed-up", "goal")
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    for ways, shots, queries in SAMPLING:
        sampler = EpisodeSampler(store, ways, shots, queries, split="train")
        ours = timing.per_call(partial(sampler.sample, generator), cpu)
        theirs = timing.per_call(l2l_episode_fn(l2l, meta, ways, shots, queries), cpu)
        cases = {
            name: (run, timing.calibrate(run, round_seconds)) for name, run in (("f", ours), ("l", theirs))
        }
        t = timing.interleaved(cases, rounds)
        speedup = t["l"] / t["f"]
        table.add_row(
            f"{ways}w{shots}s{queries}q",
            f"{1e6 * t['f']:.0f}",
            f"{1e6 * t['l']:.0f}",
            f"{speedup:.1f}x",
            timing.goal_cell(speedup >= SAMPLING_GOAL, f">= {SAMPLING_GOAL:.0f}x"),
        )
    return table


def l2l_train_step(maml: Any, optimizer: torch.optim.Optimizer, episodes: list[Episode], steps: int) -> None:
    """The learn2learn meta-step a user writes: clone, adapt, query loss, averaged backward."""
    maml.train()
    optimizer.zero_grad(set_to_none=True)
    for episode in episodes:
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(episode.support), episode.support_labels))
        loss = F.cross_entropy(learner(episode.query), episode.query_labels)
        (loss / len(episodes)).backward()
    optimizer.step()


def copy_as(model: nn.Module, nhwc: bool) -> nn.Module:
    """A deep copy of ``model`` with its backbone on NHWC activations or not (same weights)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "channels_last"):
            module.channels_last = nhwc
    return model


def l2l_model(base: nn.Module) -> nn.Module:
    """What a learn2learn user runs: the same weights, NCHW, blocks conv, BN, ReLU, pool.

    fewnorm's Conv-4 pools before the ReLU (the same function, ReLU on a quarter of the
    elements); learn2learn's own ``ConvBlock`` and every textbook Conv-4 apply ReLU first.
    """
    model = copy_as(base, False)
    model.embedding = textbook_order(model.embedding)
    return model


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def side_grads(
    l2l: Any, base: nn.Module, episodes: list[Episode], steps: int
) -> dict[str, dict[str, Tensor]]:
    """Each side's meta-gradient from a deep copy of ``base`` (a step with a zero learning rate)."""
    out = {}
    for name, vectorize, nhwc in SIDES:
        model = copy_as(base, nhwc)
        loop = InnerLoop(lr=0.4, steps=steps, vectorize=vectorize)
        maml_train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), episodes, loop)
        out[name] = grads(model)
    maml = l2l.algorithms.MAML(l2l_model(base), lr=0.4, first_order=False)
    l2l_train_step(maml, torch.optim.SGD(maml.parameters(), lr=0.0), episodes, steps)
    out["l2l"] = grads(maml.module)
    return out


def grad_error(ours: dict[str, Tensor], theirs: dict[str, Tensor], what: str, *, strict: bool) -> float:
    """Largest ``max|a - b| / max|b|`` over the parameters; ``strict``: exit non-zero above ``RTOL``.

    Strict means every entry within ``RTOL * (|b| + max|b|)``: the absolute part is
    the tensor's largest entry times ``RTOL``, so entries near zero are judged on
    the tensor's scale.
    """
    if ours.keys() != theirs.keys():
        raise SystemExit(f"error: {what}: gradients of different parameters ({sorted(ours ^ theirs.keys())})")
    worst = 0.0
    for k, a in ours.items():
        b = theirs[k]
        scale = float(b.abs().max())
        error = float((a - b).abs().max()) / max(scale, 1e-30)
        if strict and not torch.allclose(a, b, rtol=RTOL, atol=RTOL * scale):
            raise SystemExit(f"error: {what}: meta-gradient of '{k}' differs ({error:.2e} of its scale)")
        worst = max(worst, error)
    return worst


def maml_case(
    l2l: Any, base: nn.Module, episodes: list[Episode], steps: int, rounds: int, device: torch.device
) -> tuple[dict[str, float], list[float]]:
    """Median seconds per meta-step of each side, and the meta-gradient errors against learn2learn.

    Equality is asserted in float64, where rounding stays far below ``RTOL``, so any
    failure is a real difference; the float32 errors (vmap sums in another order)
    are reported. The float32 gradient steps are every side's warm-up.
    """
    f64 = [replace(e, support=e.support.double(), query=e.query.double()) for e in episodes]
    g64, g32 = (
        side_grads(l2l, copy.deepcopy(base).double(), f64, steps),
        side_grads(l2l, base, episodes, steps),
    )
    what = f"meta-batch {len(episodes)}, {steps} inner step(s), float64"
    errors = [max(grad_error(g64[n], g64["l2l"], f"{what}, fewnorm {n}", strict=True) for n, *_ in SIDES)]
    errors += [grad_error(g32[n], g32["l2l"], "", strict=False) for n, *_ in SIDES]
    runs = {}
    for name, vectorize, nhwc in SIDES:
        model = copy_as(base, nhwc)
        loop = InnerLoop(lr=0.4, steps=steps, vectorize=vectorize, chunks=DEFAULT_VECTORIZE_CHUNKS)
        step = partial(maml_train_step, model, torch.optim.Adam(model.parameters(), lr=1e-3), episodes, loop)
        runs[name] = timing.per_call(step, device)
    maml = l2l.algorithms.MAML(l2l_model(base), lr=0.4, first_order=False)
    step = partial(l2l_train_step, maml, torch.optim.Adam(maml.parameters(), lr=1e-3), episodes, steps)
    runs["l2l"] = timing.per_call(step, device)
    return timing.interleaved({name: (run, 1) for name, run in runs.items()}, rounds, warmup=False), errors


def maml_table(
    l2l: Any, store: ImageStore, rounds: int, queries: int, quick: bool, device: torch.device, amp: str
) -> Table:
    config = resolve_config(overrides={"algo": "maml", "ways": 5, "shots": 1, "inner_lr": 0.4, "amp": amp})
    torch.manual_seed(0)
    # Transductive BatchNorm; with --amp its backbone autocasts its forward passes, and the
    # copies every side gets (learn2learn's included) carry the same hooks.
    base = get_algorithm(config).build(config, store.image_shape[0]).to(device)
    sampler = EpisodeSampler(store, 5, 1, queries, split="train")
    generator = torch.Generator().manual_seed(1)
    title = (
        f"Second-order MAML meta-step, Conv-4, 5w1s{queries}q, Adam: ms per meta-step (median of "
        f"{rounds} rounds); fewnorm NHWC, learn2learn NCHW (torch's default); goal: l2l / the faster "
        f"fewnorm side >= {MAML_GOAL:.0f}x at batch {GOAL_META_BATCH}"
        + ("" if amp == "none" else f"; every side's forward passes autocast to {amp}")
    )
    columns = ("batch", "steps", "f64 err", "f32 err v/l/n", "vmap", "loop", "loop nchw", "l2l")
    columns += ("l2l/vmap", "l2l/loop")
    table = timing.new_table(title, *columns, "goal")
    for batch, steps in [c for c in MAML_CASES if not quick or c[1] == 1]:
        episodes = [sampler.sample(generator).to(device) for _ in range(batch)]
        t, (f64, *f32) = maml_case(l2l, base, episodes, steps, rounds, device)
        ratios = [t["l2l"] / t["vmap"], t["l2l"] / t["loop"]]
        goal = (
            timing.goal_cell(max(ratios) >= MAML_GOAL, f">= {MAML_GOAL:.0f}x")
            if batch == GOAL_META_BATCH
            else "-"
        )
        times = [f"{1e3 * t[n]:.0f}" for n in ("vmap", "loop", "loop nchw", "l2l")]
        errors = (f"{f64:.0e}", "/".join(f"{e:.0e}" for e in f32))
        table.add_row(str(batch), str(steps), *errors, *times, *(f"{r:.2f}x" for r in ratios), goal)
    return table


def main() -> None:
    parser = timing.base_parser(__doc__, "sampling 7, MAML 3; quick 3 and 1")
    parser.add_argument("--round-seconds", type=float, default=0.3, help="sampling: seconds a side per round")
    parser.add_argument(
        "--queries", type=timing.positive_int, default=5, help="MAML queries a class (fewnorm's default)"
    )
    parser.add_argument("--parts", default="sampling,maml", help="comma-separated: sampling, maml")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"sampling", "maml"}:
        parser.error(f"--parts takes sampling and/or maml, got '{args.parts}'")
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fewnorm train sets malloc; process-wide, so every side gets it
    l2l = import_learn2learn()
    store = timing.require_store("omniglot-minimal", "train", args.data_root)
    console = timing.console()
    timing.print_header(console, args)
    if "sampling" in parts:
        rounds = args.rounds or (3 if args.quick else 7)
        console.print(sampling_table(l2l, store, rounds, args.round_seconds))
    if "maml" in parts:
        rounds = args.rounds or (1 if args.quick else 3)
        console.print(maml_table(l2l, store, rounds, args.queries, args.quick, args.device, args.amp))
    console.print(f"done; {timing.machine_line()}")


if __name__ == "__main__":
    main()
