"""Collapse to chance: a run whose test accuracy is no result, said so with its likely cause.

A few-shot model that learned (high training accuracy) and still scores at chance on
the test episodes has not measured its normalizer: something in how the test
episodes are normalized broke it. The classic case is a normalizer that keeps batch
statistics, evaluated with running averages under MAML (Bronskill et al., "TaskNorm",
ICML 2020): its running averages never described an adapted task, and every query
lands in one class. The summary, ``summary.json`` and the ``compare`` tables mark
such runs instead of ranking them.

Rules (``ways``-way episodes, chance ``1/ways``):

- *one class*: every test episode (at least :data:`ONE_CLASS_EPISODES`) scores exactly
  chance, what a model that predicts one class for every query scores on balanced queries;
- *near chance*: mean test accuracy below chance, or less than :data:`NEAR_CHANCE` above
  it, while the last training accuracy lies more than :data:`LEARNED` above chance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Test accuracy within this much (absolute) above chance counts as chance.
NEAR_CHANCE = 0.10
#: Training accuracy this far above chance shows that the model learned.
LEARNED = 0.30
#: Fewest test episodes for "one class": a few episodes at exactly chance can be luck.
ONE_CLASS_EPISODES = 10


@dataclass(frozen=True)
class Collapse:
    """Why a run is marked collapsed, the likely cause, and what to try."""

    reason: str
    cause: str
    advice: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        return f"collapsed: {self.reason}; likely cause: {self.cause}; try: {self.advice}"


def diagnose(
    test_accuracies: Sequence[float], ways: int, train_accuracy: float | None, config: Mapping[str, Any]
) -> Collapse | None:
    """A :class:`Collapse` if the run's test accuracies are at chance, else ``None``."""
    if not test_accuracies or ways < 2:
        return None
    chance = 1.0 / ways
    mean = sum(test_accuracies) / len(test_accuracies)
    exact = all(abs(a - chance) < 1e-6 for a in test_accuracies)  # float32 accuracies
    learned = train_accuracy is not None and train_accuracy - chance > LEARNED
    if exact and len(test_accuracies) >= ONE_CLASS_EPISODES:
        reason = (
            f"every one of the {len(test_accuracies)} test episodes scores exactly chance "
            f"({chance:.1%}): the model predicts one class"
        )
    elif mean < chance and learned:
        reason = (
            f"test accuracy {mean:.1%} is below chance ({chance:.1%}) while training accuracy is "
            f"{train_accuracy:.1%}"
        )
    elif mean - chance < NEAR_CHANCE and learned:
        reason = (
            f"test accuracy {mean:.1%} is within {NEAR_CHANCE:.0%} of chance ({chance:.1%}) while "
            f"training accuracy is {train_accuracy:.1%}"
        )
    else:
        return None
    cause, advice = _likely_cause(config)
    return Collapse(reason, cause, advice)


def _likely_cause(config: Mapping[str, Any]) -> tuple[str, str]:
    algo = str(config.get("algo", ""))
    gradient = _family(algo) == "gradient"  # the MAML family: adapted in eval() on the support set
    norm = str(config.get("norm", ""))
    options = config.get("norm_options") or {}
    mode = options.get("mode") if "mode" in options else _factory_mode(norm)
    if gradient and mode == "running":
        return (
            f"{norm} in running mode under {algo}: evaluation normalizes with running averages that "
            "never describe an adapted task (TaskNorm, Bronskill et al. 2020)",
            "--norm-opt mode=transductive (the MAML default) or mode=support",
        )
    if gradient and config.get("buffer_policy") == "global":
        return (
            f"{norm} with global buffers under {algo}: per-task statistics leak into the meta-model",
            "--buffer-policy by_role (the default)",
        )
    if mode == "running":
        return (
            f"{norm} in running mode: the test episodes' statistics differ from the running averages",
            "--norm-opt mode=transductive or mode=support",
        )
    if gradient:
        steps, lr = config.get("inner_steps_test"), config.get("inner_lr")
        return (
            f"the test-time inner loop ({steps} steps at lr {lr}) diverges with {norm}, or the "
            "features learned in training do not transfer (PatchNorm's output gain, for one, "
            "multiplies the inner step: docs/maml.md)",
            "fewnorm evaluate RUN --inner-steps-test 1 to tell the two apart; a lower --inner-lr",
        )
    return (
        "the features learned in training do not transfer to the test classes (overfitting, "
        "or a learning rate that broke the model late)",
        "a lower --lr, fewer --episodes, or another normalizer; see docs/maml.md",
    )


def _family(algo: str) -> str | None:
    from fewnorm.algorithms import get_algorithm_spec
    from fewnorm.errors import FewnormError

    try:
        return get_algorithm_spec(algo).family
    except FewnormError:
        return None


def _factory_mode(norm: str) -> str | None:
    """The mode a run that recorded none ran in (runs written before modes were recorded)."""
    from fewnorm.errors import FewnormError
    from fewnorm.norms import get_norm

    try:
        modes = get_norm(norm).modes
    except FewnormError:
        return None
    return modes[0] if modes else None


def last_train_accuracy(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The training accuracy of the last ``train`` record of ``metrics.jsonl``, if any."""
    for record in reversed(records):
        if record.get("kind") == "train":
            return float(record["accuracy"])
    return None


def run_train_accuracy(run_dir: Path) -> float | None:
    """:func:`last_train_accuracy` of a run directory's ``metrics.jsonl`` (``None`` if unreadable)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return None
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a torn last line of a killed run
    return last_train_accuracy(records)
