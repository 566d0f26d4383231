"""``fewnorm train``: resolve the configuration, train, print the summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from fewnorm.algorithms import BUILTIN_ALGORITHMS, DEFAULT_ALGORITHM
from fewnorm.data.registry import ALL_DATASETS
from fewnorm.errors import ConfigError, FewnormError

PLUGIN_HELP = "Load normalizer registration code from FILE.py or package.module (repeatable)."
#: Read from the registry's built-ins (a listing of plugins would import them at every start).
ALGO_HELP = (
    f"Algorithm: {' | '.join(s.name for s in BUILTIN_ALGORITHMS)}, or a plugin's (`fewnorm algorithms`)."
)
SPLIT_FILE_HELP = (
    "Omniglot split files: a folder with train.txt, val.txt, test.txt (e.g. the Vinyals split); "
    "implies --dataset omniglot-vinyals."
)


def dataset_options(dataset: str | None, split_file: Path | None) -> dict[str, str | None]:
    """``--dataset`` and ``--split-file`` as config overrides; split files imply their dataset."""
    from fewnorm.data.registry import datasets_supporting

    return {
        "dataset": dataset or (datasets_supporting("split-file")[0] if split_file else None),
        "split_file": str(split_file) if split_file else None,
    }


def parse_norm_options(pairs: list[str] | None) -> dict[str, str]:
    """``["groups=8", "eps=1e-4"]`` -> ``{"groups": "8", "eps": "1e-4"}`` (typed by the spec)."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--norm-opt expects key=value, got '{pair}'")
        options[key.strip()] = value.strip()
    return options


def train(
    algo: str | None = typer.Option(None, help=ALGO_HELP[:-1] + f" (default {DEFAULT_ALGORITHM})."),
    dataset: str | None = typer.Option(
        None,
        help=f"{' | '.join(ALL_DATASETS)} (default omniglot-minimal; `fewnorm datasets` lists plugins' too).",
    ),
    split_file: Path | None = typer.Option(None, help=SPLIT_FILE_HELP, metavar="PATH"),
    ways: int | None = typer.Option(None, help="Ways of validation and test episodes (default 5)."),
    shots: int | None = typer.Option(None, help="Support images per class (default 1)."),
    queries: int | None = typer.Option(None, help="Query images per class at validation/test (default 15)."),
    train_ways: int | None = typer.Option(None, help="Ways of training episodes (default 20)."),
    train_shots: int | None = typer.Option(None, help="Shots of training episodes (default --shots)."),
    train_queries: int | None = typer.Option(None, help="Queries per class in training (default 5)."),
    episodes: int | None = typer.Option(
        None, help="Training episodes (outer steps; default 1200, MAML-family 8000)."
    ),
    meta_batch: int | None = typer.Option(
        None,
        "--meta-batch",
        "--episodes-per-step",
        help="Episodes per outer step (MAML's meta-batch; ProtoNet's episodes per step; default 1).",
    ),
    inner_lr: float | None = typer.Option(None, help="MAML inner learning rate (default 0.4)."),
    inner_steps: int | None = typer.Option(None, help="MAML inner steps in training (default 1)."),
    inner_steps_test: int | None = typer.Option(
        None, help="MAML inner steps at validation/test (default 10)."
    ),
    inner_optimizer: str | None = typer.Option(
        None, help="Reptile / Baseline test-time steps: sgd | adam | sgd-momentum (reptile adam)."
    ),
    inner_batch: int | None = typer.Option(None, help="Reptile: images per inner step (default 10)."),
    inner_batch_test: int | None = typer.Option(
        None, help="Reptile / Baseline: support images per test-time step (reptile 5, baseline 4)."
    ),
    batch_size: int | None = typer.Option(None, help="Baseline: images per pre-training minibatch (16)."),
    finetune_backbone: bool | None = typer.Option(
        None,
        "--finetune-backbone/--frozen-backbone",
        help="Baseline: fine-tune the backbone with the fresh head at test time (default frozen).",
    ),
    buffer_policy: str | None = typer.Option(
        None,
        help="MAML buffers: by_role (default: statistics per task, learned state such as SWBN's "
        "whitening learns) | per_task | global (ablations).",
    ),
    head: str | None = typer.Option(
        None, help="MAML-family head: linear | linear-zero | affine-divergence (default linear)."
    ),
    augment: bool | None = typer.Option(
        None,
        "--augment/--no-augment",
        help="Augment training episodes (crop, colour jitter, flip; default off).",
    ),
    query_one_at_a_time: bool | None = typer.Option(
        None,
        "--query-one-at-a-time/--queries-together",
        help="Score each query image alone (default: together).",
    ),
    affine: bool | None = typer.Option(
        None, "--affine/--no-affine", help="Small random affine distortions of training images (Koch et al.)."
    ),
    train_rotations: bool | None = typer.Option(
        None,
        "--train-rotations/--no-train-rotations",
        help="Omniglot: rotated characters as extra training classes (default on).",
    ),
    norm: str | None = typer.Option(None, help="Normalizer name, see `fewnorm norms` (default batchnorm)."),
    norm_opt: list[str] | None = typer.Option(
        None, "--norm-opt", help="Normalizer option key=value (repeatable).", metavar="KEY=VALUE"
    ),
    backbone: str | None = typer.Option(None, help="Backbone: conv4 | resnet12 (default conv4)."),
    hidden: int | None = typer.Option(None, help="Filters per Conv-4 block (default 64)."),
    dropblock: float | None = typer.Option(
        None, help="ResNet-12 DropBlock drop probability (default 0: off)."
    ),
    lr: float | None = typer.Option(
        None,
        "--lr",
        "--outer-lr",
        help="Outer learning rate: Adam's (default 1e-3); Reptile's meta step (1.0).",
    ),
    lr_halve_every: int | None = typer.Option(
        None, help="Halve the learning rate every N episodes (default 0: never; MAML-family 3000)."
    ),
    val_every: int | None = typer.Option(
        None, help="Validate every N training episodes (default 200, MAML-family 1000)."
    ),
    val_episodes: int | None = typer.Option(
        None, help="Fixed validation episodes (default 100; lake-style: runs)."
    ),
    test_episodes: int | None = typer.Option(
        None, help="Fixed test episodes (default 600; >= 600 for papers)."
    ),
    val_protocol: str | None = typer.Option(
        None,
        help="Select checkpoints by: episodes (default: val-split episodes) | lake-style (20-way 1-shot "
        "within-alphabet runs of --val-fold's alphabet, which training leaves out).",
    ),
    val_fold: int | None = typer.Option(
        None, help="lake-style: the fold K (alphabet K by name of the training alphabets) held out."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML config file; options override it."),
    seed: int | None = typer.Option(None, help="Seed of initialization and training episodes (default 0)."),
    device: str | None = typer.Option(None, help="cpu | cuda | cuda:N (default cpu)."),
    vectorize: bool | None = typer.Option(
        None,
        "--vectorize/--no-vectorize",
        help="MAML family: adapt a meta-batch's tasks together with vmap (default: on CUDA only).",
    ),
    vectorize_chunks: int | None = typer.Option(
        None,
        min=1,
        help="Vectorized MAML: vmap calls per meta-batch, each freed after its backward (default 4: "
        "memory within the loop's plus the meta-batch's activations; 1: one call, most memory).",
    ),
    channels_last: bool | None = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Run the backbone on NHWC activations (default: where the normalizer measured faster).",
    ),
    amp: str | None = typer.Option(
        None,
        help="Mixed precision of the backbone's forward passes: none | bf16 (default none; recorded).",
    ),
    threads: int | None = typer.Option(
        None, help="Torch intra-op threads (default: the usable CPUs / processes, at most 8; recorded)."
    ),
    data_root: Path | None = typer.Option(
        None, help="Data root (else $FEWNORM_DATA, else `fewnorm data link`'s, else the user cache)."
    ),
    out: Path | None = typer.Option(None, help="Run directory (default runs/<time>-<dataset>-<norm>)."),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the interrupted run in RUN_DIR from its last checkpoint.",
        metavar="RUN_DIR",
    ),
    nproc: int | None = typer.Option(
        None,
        min=1,
        help="Split each step's episodes over N processes (torchrun's agent; gloo on CPU, nccl on CUDA).",
    ),
    plugin: list[str] | None = typer.Option(None, "--plugin", help=PLUGIN_HELP, metavar="FILE.py|MODULE"),
    logger: list[str] | None = typer.Option(
        None,
        "--logger",
        help="Track the run's curves and config: csv | tensorboard | wandb | mlflow (offline), into "
        "RUN_DIR/logs/ (repeatable).",
        metavar="NAME",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """Train a few-shot model with the chosen normalizer and score it on fixed test episodes."""
    from fewnorm import torchrun
    from fewnorm.algorithms import check_algorithm_options
    from fewnorm.config import default_threads, resolve_config
    from fewnorm.distributed import check_resume_world_size
    from fewnorm.norms.plugins import load_plugins, require_recorded_norm
    from fewnorm.tracking import check_loggers

    loggers = check_loggers(logger)
    load_plugins(plugin)
    launched = torchrun.launched_world_size()
    if nproc is not None and launched is not None:
        raise ConfigError("--nproc starts torchrun itself; under torchrun, drop --nproc")
    processes = nproc or launched
    overrides: dict[str, Any] = {
        "algo": algo,
        **dataset_options(dataset, split_file),
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "train_ways": train_ways,
        "train_shots": train_shots,
        "train_queries": train_queries,
        "episodes": episodes,
        "meta_batch": meta_batch,
        "inner_lr": inner_lr,
        "inner_steps": inner_steps,
        "inner_steps_test": inner_steps_test,
        "inner_optimizer": inner_optimizer,
        "inner_batch": inner_batch,
        "inner_batch_test": inner_batch_test,
        "batch_size": batch_size,
        "finetune_backbone": finetune_backbone,
        "buffer_policy": buffer_policy,
        "head": head,
        "augment": augment,
        "affine": affine,
        "train_rotations": train_rotations,
        "query_one_at_a_time": query_one_at_a_time,
        "norm": norm,
        "backbone": backbone,
        "hidden": hidden,
        "dropblock": dropblock,
        "lr": lr,
        "lr_halve_every": lr_halve_every,
        "val_every": val_every,
        "val_episodes": val_episodes,
        "val_protocol": val_protocol,
        "val_fold": val_fold,
        "test_episodes": test_episodes,
        "seed": seed,
        "device": device,
        "threads": threads,
        "vectorize": vectorize,
        "vectorize_chunks": vectorize_chunks,
        "channels_last": channels_last,
        "amp": amp,
        "data_root": str(data_root) if data_root else None,
    }
    if resume is not None:
        given = [k for k, v in overrides.items() if v is not None]
        given += (
            ["config"] * (config is not None) + ["norm_opt"] * bool(norm_opt) + ["out"] * (out is not None)
        )
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"--resume continues the run with its saved configuration; drop {flags}")
        if not (resume / "config.yaml").is_file():
            raise ConfigError(f"'{resume}' is not a run directory (no config.yaml); pass the run's --out")
        resolved = resolve_config(resume / "config.yaml")
        require_recorded_norm(resolved.norm, resume)
        check_resume_world_size(resolved.world_size, processes, resume)
        run_dir = resume
    else:
        resolved = resolve_config(config, overrides | {"world_size": processes})
        check_algorithm_options(resolved.algo, {k: v for k, v in overrides.items() if v is not None})
        if resolved.threads is None:
            resolved = resolved.model_copy(update={"threads": default_threads(processes or 1)})
    from fewnorm.episodes.plan import plan_run

    plan = plan_run(resolved, None if resume else parse_norm_options(norm_opt))  # every name, once
    resolved = plan.config
    if resume is None:
        run_dir = out or _default_out(resolved.dataset, resolved.norm)
    if nproc is not None:
        _launch(nproc, plan, run_dir, resume is not None, plugin, json_output, progress, loggers)
        return
    leader = torchrun.launched_rank() in (None, 0)  # other ranks train silently

    from fewnorm.cli.render import print_json, stdout, summary_table, train_progress
    from fewnorm.distributed import resume_command
    from fewnorm.episodes.loop import RunInterrupted, check_run_dir, owns_run_lock
    from fewnorm.episodes.loop import train as run_training
    from fewnorm.tracking import Trackers

    if owns_run_lock(run_dir):  # refusals before the progress display (train checks again, locked)
        check_run_dir(resolved, run_dir, resume=resume is not None)
    trackers = Trackers(loggers if leader else [], run_dir, resolved.model_dump())

    try:
        with train_progress(progress and not json_output and leader) as bars:
            summary = run_training(
                plan,
                run_dir,
                resume=resume is not None,
                on_episode=bars.on_episode,
                on_stage=bars.on_stage,
                on_record=trackers.on_record,
            )
        if leader:  # the trackers' test point; curves.png beside metrics.jsonl
            trackers.finish(summary.to_dict(), title=f"{resolved.norm}: {run_dir.name}")
    except RunInterrupted as stop:
        if leader:
            typer.echo(
                f"interrupted at episode {stop.episode}/{stop.total}; checkpoint saved; "
                f"resume with: {resume_command(resolved.world_size, stop.run_dir)}",
                err=True,
            )
        raise typer.Exit(130) from None
    except FewnormError:
        if not leader:  # every rank meets the same error (divergence included): rank 0 says it once
            raise typer.Exit(2) from None
        raise
    finally:
        trackers.close()
        torchrun.leave()
    if not leader:
        return
    if json_output:
        print_json(summary.to_dict() | {"test_accuracies": None})
    else:
        stdout.print(summary_table(summary))


def _default_out(dataset: str, norm: str) -> Path:
    from fewnorm.runs import default_run_dir

    return default_run_dir(f"{dataset}-{norm}")


def _launch(
    nproc: int,
    plan: Any,
    run_dir: Path,
    resume: bool,
    plugins: list[str] | None,
    json_output: bool,
    progress: bool,
    loggers: list[str] | None = None,
) -> None:
    """``fewnorm train --nproc N``: the resolved run on N torchrun workers; exits as its first failure."""
    import tempfile

    import yaml

    from fewnorm.episodes.loop import check_run_dir
    from fewnorm.runs import LOCK_HELD_ENV, RunDir
    from fewnorm.torchrun import launch

    # What the ranks would refuse is refused here, in one line; the cache is decoded by one process.
    config = plan.config
    check_run_dir(config, run_dir, resume=resume)
    runs = RunDir(run_dir)
    flags = [f"--plugin={p}" for p in plugins or []]
    flags += [f"--logger={name}" for name in loggers or []]
    flags += ["--json"] * json_output + ["--no-progress"] * (not progress)
    with runs.lock(), tempfile.TemporaryDirectory(prefix="fewnorm-nproc-") as tmp:  # held for the workers
        if not resume:
            runs.prepare()
        plan.splits(("train", "val", "test"))
        if resume:
            args = ["train", "--resume", str(run_dir), *flags]
        else:
            file = Path(tmp) / "config.yaml"
            file.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
            args = ["train", "--config", str(file), "--out", str(run_dir), *flags]
        os.environ[LOCK_HELD_ENV] = str(run_dir.resolve())  # the workers inherit it
        try:
            code = launch(nproc, args)
        finally:
            os.environ.pop(LOCK_HELD_ENV, None)
    if code:
        raise typer.Exit(code)
