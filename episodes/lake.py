"""Lake's one-shot classification benchmark (``lake20``) for a trained ProtoNet or MAML.

Each of the 20 runs is one 20-way 1-shot task: its 20 training images are the support
set, its 20 test items the query set. A ProtoNet embeds them under the phase signal in
one task scope and assigns each test item the training image whose embedding is nearest
(ties to the first in file order, as ``argmin`` in the original). A MAML, FOMAML or ANIL
model gets a fresh 20-way head per run (:mod:`fewnorm.episodes.reinit`: prototype or zero
init), adapted on the training images by the run's test-time inner loop, and assigns each
test item its highest logit (ties to the first); a Baseline or Baseline++ model trains
its own fresh 20-way head per run (:mod:`fewnorm.episodes.baseline`). Scored exactly as Lake's
``demo_classification.py``: per run ``100 - 100 * correct / ntest`` percent error, then
the mean over the 20 runs. Only models trained on an alphabet-disjoint split
(``omniglot``, ``omniglot-minimal``) may be scored, or on split files whose training and
validation classes avoid every evaluation alphabet: the Vinyals split's training
alphabets include the runs' alphabets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewnorm.algorithms import get_algorithm_spec, list_algorithms
from fewnorm.config import RunConfig, validate_config
from fewnorm.data.lake import LakeRun, default_runs_path, load_runs
from fewnorm.data.registry import datasets_supporting, supports
from fewnorm.data.splitfile import EVALUATION_ALPHABETS, read_split_files
from fewnorm.episode import Episode
from fewnorm.episodes.loop import resolve_device
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.protonet import protonet_logits
from fewnorm.episodes.reinit import MAML_FAMILY, HeadProtocol, TaskScorer, head_protocol, scoring_algorithm
from fewnorm.errors import ConfigError, DataError, UnknownNameError
from fewnorm.runs import load_checkpoint

BENCHMARK = "lake20"


#: Algorithms with a lake20 protocol: nearest prototype (protonet), a fresh adapted head (the rest).
def check_lake_algorithm(algo: str, benchmark: str) -> None:
    """Refuse, in one line, a run whose algorithm does not declare Lake's one-shot runs."""
    try:
        supported = "lake20" in get_algorithm_spec(algo).supports
    except UnknownNameError:
        supported = False
    if not supported:
        raise ConfigError(f"{benchmark} scores {', '.join(lake_algorithms())} models; this run is '{algo}'.")


def lake_algorithms() -> list[str]:
    """The registered algorithms that declare Lake's one-shot runs among what they support."""
    return [s.name for s in list_algorithms() if "lake20" in s.supports]


WAYS = 20  # every run is 20-way 1-shot


@dataclass(frozen=True)
class LakeResult:
    """Per-run and mean error of one model on Lake's 20 runs."""

    checkpoint: str
    config: dict[str, Any]
    runs_path: str
    runs: list[str]
    correct: list[int]
    items: list[int]
    errors: list[float]  # percent, per run
    protocol: dict[str, Any] | None = None  # MAML-family: the head protocol (HeadProtocol.to_dict)

    @property
    def mean_error(self) -> float:
        """Mean percent error over the runs (the benchmark's score)."""
        return sum(self.errors) / len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": BENCHMARK,
            "checkpoint": self.checkpoint,
            "dataset": self.config["dataset"],
            "norm": self.config["norm"],
            "norm_options": self.config["norm_options"],
            "runs_path": self.runs_path,
            "runs": [
                {"run": r, "correct": c, "items": n, "error": e}
                for r, c, n, e in zip(self.runs, self.correct, self.items, self.errors, strict=True)
            ],
            "mean_error": self.mean_error,
        } | ({"protocol": self.protocol} if self.protocol is not None else {})


def run_error(correct: int, items: int) -> float:
    """Percent error of one run, computed as the original (``100 - 100 * correct / ntest``)."""
    pcorrect = 100 * correct / items
    return 100 - pcorrect


def check_lake_safe(config: RunConfig) -> None:
    """Raise :class:`ConfigError` unless ``config`` trained on an alphabet-disjoint split."""
    why = None
    if not supports(config.dataset, "lake20"):
        why = "not an Omniglot split known to be alphabet-disjoint from Lake's runs"
    elif supports(config.dataset, "split-file"):
        why = _split_file_leak(config)
    if why is not None:
        safe = datasets_supporting("lake20", without="split-file")
        raise ConfigError(
            f"cannot score this model on {BENCHMARK}: it was trained on '{config.dataset}', {why}; "
            f"score models trained on {' or '.join(safe)}, or on split files that keep "
            f"the evaluation alphabets out of training and validation."
        )
    check_lake_algorithm(config.algo, BENCHMARK)


def _split_file_leak(config: RunConfig) -> str | None:
    """Why a model trained on its split files may have seen the runs' alphabets, or ``None``."""
    if not config.split_file:
        return "with no split files recorded to check for the runs' alphabets"
    try:
        splits = read_split_files(config.split_file)
        splits.check_digest(config.split_classes)
    except DataError as exc:
        return f"whose split files cannot be checked for the runs' alphabets ({exc})"
    seen = sorted(splits.alphabets("train", "val") & EVALUATION_ALPHABETS)
    if not seen:
        return None
    more = f" and {len(seen) - 3} more" if len(seen) > 3 else ""
    return (
        f"whose training and validation classes include evaluation alphabets, which Lake's runs "
        f"draw on ({', '.join(seen[:3])}{more}; the Vinyals split does this)"
    )


def run_episode(run: LakeRun, device: torch.device) -> Episode:
    """``run`` as a 20-way 1-shot episode: training images labelled 0..19 in file order."""
    support = run.training.to(device).float().div_(255.0)  # (20, 1, S, S)
    query = run.test.to(device).float().div_(255.0)  # (20, 1, S, S)
    answers = torch.tensor(run.answers, device=device)  # (20,)
    ways = support.shape[0]
    return Episode(support, torch.arange(ways, device=device), query, answers, ways, 1, 1)


@torch.no_grad()
def score_run(model: nn.Module, run: LakeRun, device: torch.device, *, one_at_a_time: bool = False) -> int:
    """How many test items of ``run`` the ProtoNet assigns to their correct training image."""
    model.eval()
    episode = run_episode(run, device)
    logits = protonet_logits(model, episode, one_at_a_time=one_at_a_time)  # (20, 20)
    return int((logits.argmax(1) == episode.query_labels).sum())  # argmax: the first of equal maxima


def score_run_adapted(scorer: TaskScorer, model: nn.Module, run: LakeRun, device: torch.device) -> int:
    """How many test items of ``run`` a MAML-family model gets right after adapting on it.

    ``scorer`` (:func:`~fewnorm.episodes.reinit.scoring_algorithm`) re-initialises the
    head on the run's training images, adapts and scores; the model is left unchanged.
    """
    episode = run_episode(run, device)
    accuracy = scorer.evaluate(model, episode)  # the mean of 0/1 over the items, as a float
    return round(accuracy * len(run.answers))


def correct_counts(
    model: nn.Module,
    runs: list[LakeRun],
    config: RunConfig,
    protocol: HeadProtocol | None,
    device: torch.device,
    one_at_a_time: bool,
    callback: Callable[[int], None] | None = None,
) -> list[int]:
    """Correct test items per run: nearest training image (ProtoNet), else a fresh adapted head."""
    adapted: TaskScorer | None = None
    alone = config.model_copy(update={"query_one_at_a_time": one_at_a_time})
    if protocol is not None:
        adapted = scoring_algorithm(alone, protocol.head_init)
    elif get_algorithm_spec(config.algo).family == "finetune":  # a fresh head per run, its own scorer
        adapted = plan_run(alone).algorithm
    correct = []
    for i, run in enumerate(runs):
        if adapted is None:
            correct.append(score_run(model, run, device, one_at_a_time=one_at_a_time))
        else:
            correct.append(score_run_adapted(adapted, model, run, device))
        if callback is not None:
            callback(i + 1)
    return correct


@dataclass(frozen=True)
class LakeTask:
    """A checkpoint checked for ``lake20`` and the runs to score it on."""

    checkpoint: str
    config: RunConfig
    state: dict[str, Any] = field(repr=False)
    runs_path: Path
    runs: list[LakeRun] = field(repr=False)
    protocol: HeadProtocol | None = None  # MAML-family runs: how the fresh 20-way head is scored


def load_lake20(
    path: Path,
    *,
    runs: Path | None = None,
    data_root: Path | None = None,
    split_file: Path | None = None,
    head_init: str | None = None,
    inner_steps_test: int | None = None,
) -> LakeTask:
    """Load and check the checkpoint at ``path`` and Lake's runs (the zip or its folder).

    ``runs`` defaults to ``<data root>/omniglot/all_runs.zip`` (data root: ``data_root``,
    else the run's, else ``$FEWNORM_DATA``). ``split_file`` says where an ``omniglot-vinyals``
    run's split files are now. MAML-family runs take ``head_init`` (default: a fresh head,
    :data:`~fewnorm.episodes.reinit.DEFAULT_HEAD_INIT`) and ``inner_steps_test`` (default:
    the run's). Every refusal happens here, before scoring.
    """
    state = load_checkpoint(path)
    moved: dict[str, Any] = {"split_file": str(split_file)} if split_file else {}
    if inner_steps_test is not None:
        moved["inner_steps_test"] = inner_steps_test
    config = validate_config(state["config"] | moved, "options")
    check_lake_safe(config)
    protocol = head_protocol(config, head_init, WAYS, fresh=True)  # a fresh head unless asked
    fine_tunes = get_algorithm_spec(config.algo).family == "finetune"  # its fresh head's steps
    if protocol is None and not fine_tunes and inner_steps_test is not None:
        raise ConfigError(f"--inner-steps-test applies to {MAML_FAMILY}; this run is '{config.algo}'")
    runs_path = runs or default_runs_path(data_root or config.data_root)
    return LakeTask(str(path), config, state, runs_path, load_runs(runs_path), protocol)


def score_lake20(
    task: LakeTask,
    *,
    device: str = "cpu",
    one_at_a_time: bool | None = None,
    on_stage: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> LakeResult:
    """Score ``task``'s model on each run; ``one_at_a_time`` defaults to the run's setting."""
    dev = resolve_device(device)
    config = task.config
    model = plan_run(config).build_model(task.runs[0].training.shape[1]).to(dev)
    model.load_state_dict(task.state["model"])
    alone = config.query_one_at_a_time if one_at_a_time is None else one_at_a_time
    callback = on_stage(BENCHMARK, len(task.runs)) if on_stage else None
    correct = correct_counts(model, task.runs, config, task.protocol, dev, alone, callback)
    items = [len(run.test_files) for run in task.runs]
    return LakeResult(
        task.checkpoint,
        config.model_dump(),
        str(task.runs_path),
        [run.name for run in task.runs],
        correct,
        items,
        [run_error(c, n) for c, n in zip(correct, items, strict=True)],
        task.protocol.to_dict() if task.protocol is not None else None,
    )
