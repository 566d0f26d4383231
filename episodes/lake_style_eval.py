"""``fewnorm evaluate RUN --benchmark lake-style``: a checkpoint on its fold's lake-style runs.

The runs are drawn from ``test_seed`` (run ``i`` from ``test_seed + i``), not from the
``val_seed`` runs that chose the checkpoint, so the reported error is not the one it was
selected by. Only a model whose training classes avoid the fold's alphabet is scored: a
run trained with ``--val-protocol lake-style --val-fold K`` on fold ``K``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewnorm.algorithms import get_algorithm_spec
from fewnorm.config import RunConfig, validate_config
from fewnorm.data.lakestyle import LAKE_STYLE, RUN_WAYS, load_fold, training_alphabets
from fewnorm.data.registry import canonical_dataset, datasets_supporting, supports
from fewnorm.episodes.ensemble import AugmentedViews, EmbeddingEnsemble
from fewnorm.episodes.lake import LakeResult, check_lake_algorithm, correct_counts, run_error
from fewnorm.episodes.lake_style import LakeStyleRun, draw_runs
from fewnorm.episodes.loop import resolve_device
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.reinit import MAML_FAMILY, HeadProtocol, head_protocol
from fewnorm.errors import ConfigError
from fewnorm.metrics import mean_ci95
from fewnorm.runs import load_checkpoint

#: Runs scored by ``--benchmark lake-style`` unless ``--episodes`` says otherwise.
DEFAULT_RUNS = 200


@dataclass(frozen=True)
class LakeStyleResult(LakeResult):
    """Per-run and mean error on one fold's lake-style runs, with the fold and the seed."""

    fold: int = 0
    alphabet: str = ""
    seed: int = 0
    ensemble: list[str] = field(default_factory=list)  # the other members' checkpoints
    tta: int = 0

    def to_dict(self) -> dict[str, Any]:
        errors = mean_ci95(self.errors)
        return super().to_dict() | {
            "benchmark": LAKE_STYLE,
            "fold": self.fold,
            "alphabet": self.alphabet,
            "seed": self.seed,
            "ci95": errors.ci95,
            "ensemble": self.ensemble,
            "tta": self.tta,
        }


@dataclass(frozen=True)
class LakeStyleTask:
    """A checkpoint checked for its fold, and the runs to score it on."""

    checkpoint: str
    config: RunConfig
    state: dict[str, Any] = field(repr=False)
    fold: int
    alphabet: str
    seed: int
    runs: list[LakeStyleRun] = field(repr=False)
    protocol: HeadProtocol | None = None
    members: list[tuple[RunConfig, dict[str, Any]]] = field(default_factory=list, repr=False)  # ensemble
    tta: int = 0  # test-time augmented views per image (0: none)
    member_paths: list[Path] = field(default_factory=list)


def check_fold(config: RunConfig, fold: int, data_root: Path | str | None) -> None:
    """Raise :class:`ConfigError` unless ``config`` trained without fold ``fold``'s alphabet."""
    if not supports(config.dataset, LAKE_STYLE):
        raise ConfigError(
            f"{LAKE_STYLE} folds are defined on {' and '.join(datasets_supporting(LAKE_STYLE))}; this run "
            f"trained on '{config.dataset}'."
        )
    dataset = canonical_dataset(config.dataset)
    check_lake_algorithm(config.algo, LAKE_STYLE)
    from fewnorm.data.lakestyle import fold_alphabet

    alphabet = fold_alphabet(dataset, fold, data_root)
    if alphabet in training_alphabets(dataset, config.val_fold, data_root):
        trained = (
            "all its training alphabets" if config.val_fold is None else f"fold {config.val_fold} held out"
        )
        raise ConfigError(
            f"cannot score this model on {LAKE_STYLE} fold {fold}: its training classes ({dataset}, "
            f"{trained}) include {alphabet}; train with --val-protocol {LAKE_STYLE} --val-fold {fold}."
        )


def load_lake_style(
    path: Path,
    *,
    fold: int | None = None,
    runs: int | None = None,
    data_root: Path | None = None,
    head_init: str | None = None,
    inner_steps_test: int | None = None,
    ensemble: list[Path] | None = None,
    tta: int = 0,
) -> LakeStyleTask:
    """Load and check the checkpoint at ``path``, then draw its fold's runs; every refusal is here.

    ``fold`` defaults to the run's ``val_fold``; ``runs`` to :data:`DEFAULT_RUNS`. ProtoNet runs
    may add ``ensemble`` members (other ProtoNet checkpoints, each checked for the fold) and
    ``tta`` test-time augmented views (:mod:`fewnorm.episodes.ensemble`).
    """
    state = load_checkpoint(path)
    moved: dict[str, Any] = {} if inner_steps_test is None else {"inner_steps_test": inner_steps_test}
    config = validate_config(state["config"] | moved, "options")
    root = str(data_root) if data_root else config.data_root
    chosen = fold if fold is not None else config.val_fold
    if chosen is None:
        raise ConfigError(
            f"this run names no lake-style fold (trained without --val-protocol {LAKE_STYLE}); "
            f"pass --val-fold K, for a run trained without fold K."
        )
    if runs is not None and runs < 1:
        raise ConfigError(f"--episodes must be positive, got {runs}")
    check_fold(config, chosen, root)
    protocol = head_protocol(config, head_init, RUN_WAYS, fresh=True)
    if protocol is None and inner_steps_test is not None:
        raise ConfigError(f"--inner-steps-test applies to {MAML_FAMILY}; this run is '{config.algo}'")
    if tta < 0:
        raise ConfigError(f"--tta must be 0 or more views, got {tta}")
    members = [_member(p, chosen, root) for p in ensemble or []]
    if (members or tta) and protocol is not None:
        raise ConfigError(f"--ensemble and --tta apply to protonet runs; this run is '{config.algo}'")
    data = load_fold(config.dataset, chosen, root)
    drawn = draw_runs(data, runs or DEFAULT_RUNS, config.test_seed)
    return LakeStyleTask(
        str(path),
        config,
        state,
        chosen,
        data.alphabet,
        config.test_seed,
        drawn,
        protocol,
        members,
        tta,
        list(ensemble or []),
    )


def _member(path: Path, fold: int, root: str | None) -> tuple[RunConfig, dict[str, Any]]:
    """An ensemble member: a ProtoNet checkpoint that also trained without ``fold``'s alphabet."""
    state = load_checkpoint(path)
    config = validate_config(state["config"], f"ensemble member '{path}'")
    if get_algorithm_spec(config.algo).family != "metric":  # the ensemble averages embeddings
        raise ConfigError(
            f"--ensemble members must be runs of a metric method (protonet); '{path}' is '{config.algo}'"
        )
    check_fold(config, fold, root)
    return config, state["model"]


def score_lake_style(
    task: LakeStyleTask,
    *,
    device: str = "cpu",
    one_at_a_time: bool | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> LakeStyleResult:
    """Score ``task``'s model on each run exactly as ``lake20`` scores Lake's runs."""
    dev = resolve_device(device)
    config = task.config
    channels = task.runs[0].training.shape[1]
    model = plan_run(config).build_model(channels).to(dev)
    model.load_state_dict(task.state["model"])
    if task.members:
        built = [plan_run(c).build_model(channels).to(dev) for c, _ in task.members]
        for member, (_, weights) in zip(built, task.members, strict=True):
            member.load_state_dict(weights)
        model = EmbeddingEnsemble([model, *built])
    if task.tta:
        model = AugmentedViews(model, task.tta).to(dev)
    alone = config.query_one_at_a_time if one_at_a_time is None else one_at_a_time
    callback = on_stage(LAKE_STYLE, len(task.runs)) if on_stage else None
    correct = correct_counts(model, list(task.runs), config, task.protocol, dev, alone, callback)
    items = [len(run.test_files) for run in task.runs]
    return LakeStyleResult(
        task.checkpoint,
        config.model_dump(),
        f"{config.dataset} fold {task.fold} ({task.alphabet}), seed {task.seed}",
        [run.name for run in task.runs],
        correct,
        items,
        [run_error(c, n) for c, n in zip(correct, items, strict=True)],
        task.protocol.to_dict() if task.protocol is not None else None,
        fold=task.fold,
        alphabet=task.alphabet,
        seed=task.seed,
        ensemble=[str(m) for m in task.member_paths],
        tta=task.tta,
    )
