"""Peak memory of loading miniImageNet's training split, relative to its uint8 size.

Writes a synthetic split of the real size (38,400 images of 84x84x3, 64 classes) as a
learn2learn pickle (``mini-imagenet-cache-train.pkl``, 0.81 GB) into a temporary folder,
then measures, each in a fresh process (``ru_maxrss`` is a per-process high-water mark):

1. ``build``: the first ``load_split`` (unpickle, regroup in place, write the cache);
2. ``cache``: a second ``load_split``, from the cached store;
3. ``sample``: the cached store plus 200 augmented 5-way 5-shot 15-query episodes (the
   data path of training: gathers and float conversion of one episode at a time);
4. ``train``: the cached store plus a few Conv-4 ProtoNet steps on such episodes (the
   model's activations and gradients at 84x84 come on top of the data here).

Each row reports the process peak over the store's uint8 size, with and without the
process's baseline (Python, torch and fewnorm imported, before any data). Rows of the
pickle are interleaved across classes (``--grouped`` keeps them grouped, as released),
so every image moves when regrouping: the worst case.

    python benchmarks/miniimagenet_memory.py            # about 1-3 GB of RAM, a few minutes
    python benchmarks/miniimagenet_memory.py --images 3840 --classes 64   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_bytes() -> int:
    # Linux reports KiB. ru_maxrss survives exec (a child inherits its parent's high-water
    # mark), so the parent of the measuring processes stays small: it only spawns them.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_pickle(directory: Path, images: int, classes: int, grouped: bool, protocol: int) -> Path:
    """A learn2learn-format pickle of ``images`` random images in ``classes`` classes."""
    import numpy as np

    folder = directory / "mini-imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = np.empty((images, 84, 84, 3), dtype=np.uint8)  # (N, 84, 84, 3)
    for i in range(0, images, 1024):
        data[i : i + 1024] = rng.integers(0, 256, size=data[i : i + 1024].shape, dtype=np.uint8)
    per = images // classes
    rows = (
        np.arange(images).reshape(per, classes).T if not grouped else np.arange(images).reshape(classes, per)
    )
    class_dict = {f"n{c:08d}": rows[c].tolist() for c in range(classes)}
    path = folder / "mini-imagenet-cache-train.pkl"
    with path.open("wb") as f:
        pickle.dump({"image_data": data, "class_dict": class_dict}, f, protocol=protocol)
    return path


def measure(root: Path, stage: str, train_steps: int) -> dict[str, float]:
    """Run in a child process: load the split (and train) and report memory."""
    import torch

    from fewnorm.config import RunConfig
    from fewnorm.data import load_split
    from fewnorm.data.augment import augment_episode
    from fewnorm.episodes.algorithms import get_algorithm
    from fewnorm.episodes.sampler import EpisodeSampler

    torch.set_num_threads(2)
    baseline = _rss_bytes()
    start = time.perf_counter()
    store = load_split("mini-imagenet", "train", root)
    seconds = time.perf_counter() - start
    if stage == "sample":
        sampler = EpisodeSampler(store, 5, 5, 15)
        gen = torch.Generator().manual_seed(0)
        for _ in range(200):
            augment_episode(sampler.sample(gen), gen)
    if stage == "train":
        config = RunConfig(dataset="mini-imagenet", norm="batchnorm")
        algorithm = get_algorithm(config)
        model = algorithm.build(config, 3)
        optimizer = algorithm.optimizer(model, config)
        sampler = EpisodeSampler(store, 5, 5, 15)
        gen = torch.Generator().manual_seed(0)
        for _ in range(train_steps):
            algorithm.train_step(model, optimizer, [sampler.sample(gen)])
    size = store.images.numel()  # uint8: one byte per element
    peak = _peak_bytes()
    return {
        "stage": stage,
        "images": store.images.shape[0],
        "uint8_gb": size / 1e9,
        "baseline_gb": baseline / 1e9,
        "peak_gb": peak / 1e9,
        "peak_over_uint8": peak / size,
        "peak_minus_baseline_over_uint8": (peak - baseline) / size,
        "load_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=38_400)
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--grouped", action="store_true", help="keep each class's rows together")
    parser.add_argument("--protocol", type=int, default=4, help="pickle protocol of the synthetic file")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--measure", choices=("write", "build", "cache", "sample", "train"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure == "write":  # a child: the parent must never hold the data (see _peak_bytes)
        write_pickle(args.dir, args.images, args.classes, args.grouped, args.protocol)
        return
    if args.measure:  # a measuring child
        sys.stdout.write(json.dumps(measure(args.dir, args.measure, args.train_steps)) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write = [
            "--images",
            str(args.images),
            "--classes",
            str(args.classes),
            "--protocol",
            str(args.protocol),
        ]
        write += ["--grouped"] * args.grouped
        subprocess.run(
            [sys.executable, __file__, "--measure", "write", "--dir", str(root), *write], check=True
        )
        path = root / "mini-imagenet" / "mini-imagenet-cache-train.pkl"
        Console(stderr=True).print(
            f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s"
        )
        env = dict(os.environ, FEWNORM_CACHE=str(root / "cache"))
        rows = []
        for stage in ("build", "cache", "sample", "train"):
            cmd = [
                sys.executable,
                __file__,
                "--measure",
                stage,
                "--dir",
                str(root),
                "--train-steps",
                str(args.train_steps),
            ]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    table = Table(
        title=f"miniImageNet train split memory ({args.images} images, pickle protocol {args.protocol})"
    )
    for column in (
        "stage",
        "uint8 GB",
        "baseline GB",
        "peak GB",
        "peak / uint8",
        "(peak - baseline) / uint8",
        "load s",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["stage"],
            f"{r['uint8_gb']:.3f}",
            f"{r['baseline_gb']:.3f}",
            f"{r['peak_gb']:.3f}",
            f"{r['peak_over_uint8']:.2f}",
            f"{r['peak_minus_baseline_over_uint8']:.2f}",
            f"{r['load_seconds']:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
