"""Lake-style runs: fixed seeded 20-way 1-shot tasks within one held-out alphabet.

Run ``i`` of a fold with seed ``s`` is drawn from ``torch.Generator().manual_seed(s + i)``
alone, as fixed episodes are: :data:`~fewnorm.data.lakestyle.RUN_WAYS` characters of the
fold's alphabet (a ``randperm``, then sorted, so training image ``j`` is the ``j``-th
chosen character in store order, as Lake's ``classNN`` files), then two different drawers
among those who drew every chosen character: the first drew all 20 training images, the
second all 20 test images, as in Lake's runs. Test item ``j`` is character ``perm[j]`` of
a third ``randperm``, so the answers are a permutation, not the file order.

A run is a :class:`~fewnorm.data.lake.LakeRun` and is scored by the very functions that
score ``--benchmark lake20`` (:func:`fewnorm.episodes.lake.correct_counts`): a ProtoNet
assigns each test item its nearest training image, a MAML-family model adapts a fresh
20-way head on the training images. Error per run ``100 - 100 * correct / 20``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fewnorm.config import RunConfig
from fewnorm.data.lake import LakeRun
from fewnorm.data.lakestyle import RUN_WAYS, Fold, load_fold
from fewnorm.episodes.lake import correct_counts, run_error
from fewnorm.episodes.reinit import HeadProtocol, head_protocol
from fewnorm.errors import DataError


@dataclass(frozen=True)
class LakeStyleRun(LakeRun):
    """A lake-style run, with where its images come from in the fold's store."""

    classes: tuple[int, ...] = ()  # fold classes of training images 0..19, in store order
    support_drawer: int = 0  # who drew every training image
    query_drawer: int = 0  # who drew every test image
    support_rows: tuple[int, ...] = ()  # fold store rows of the training images
    query_rows: tuple[int, ...] = ()  # fold store rows of the test items


def draw_run(fold: Fold, index: int, seed: int, ways: int = RUN_WAYS) -> LakeStyleRun:
    """Run ``index`` of ``fold`` for ``seed``: a function of ``(fold, seed + index)`` alone."""
    store = fold.store
    if store.num_classes < ways:
        raise DataError(
            f"fold {fold.index} ({fold.alphabet}) has {store.num_classes} characters; runs need {ways}."
        )
    gen = torch.Generator().manual_seed(seed + index)
    classes = sorted(torch.randperm(store.num_classes, generator=gen)[:ways].tolist())
    common = sorted(set.intersection(*(set(fold.drawers[c]) for c in classes)))
    if len(common) < 2:
        raise DataError(f"fold {fold.index} ({fold.alphabet}): no two drawers drew characters {classes}.")
    pick = torch.randperm(len(common), generator=gen)[:2].tolist()
    support_drawer, query_drawer = common[pick[0]], common[pick[1]]
    perm = torch.randperm(ways, generator=gen).tolist()  # test item j shows character classes[perm[j]]
    support_rows = [fold.row(c, support_drawer) for c in classes]
    query_rows = [fold.row(classes[j], query_drawer) for j in perm]
    name = f"{fold.alphabet}-{seed + index}"
    names = [store.class_names[c] for c in classes]
    return LakeStyleRun(
        name=name,
        training_files=[f"{n}/drawer{support_drawer:02d}" for n in names],
        test_files=[f"{names[j]}/drawer{query_drawer:02d}" for j in perm],
        answers=perm,
        training=store.images[support_rows],  # (20, 1, S, S) uint8
        test=store.images[query_rows],  # (20, 1, S, S) uint8
        classes=tuple(classes),
        support_drawer=support_drawer,
        query_drawer=query_drawer,
        support_rows=tuple(support_rows),
        query_rows=tuple(query_rows),
    )


def draw_runs(fold: Fold, count: int, seed: int) -> list[LakeStyleRun]:
    """Runs ``0 .. count - 1`` of ``fold`` for ``seed`` (run ``i`` from ``seed + i``)."""
    return [draw_run(fold, i, seed) for i in range(count)]


class LakeStyleValidator:
    """Validation on the lake-style runs of a run's fold: what the training loop selects by.

    Scores exactly as ``lake20`` does (a fresh 20-way head for the MAML family); the
    per-run accuracy is ``correct / 20``, so a checkpoint's mean accuracy is ``1 - error``.
    """

    def __init__(self, config: RunConfig, runs: list[LakeStyleRun], protocol: HeadProtocol | None) -> None:
        self.config, self.runs, self.protocol = config, runs, protocol

    @classmethod
    def for_config(cls, config: RunConfig) -> LakeStyleValidator:
        """The ``val_episodes`` runs from ``val_seed`` of ``config``'s fold."""
        if config.val_fold is None:
            raise DataError("lake-style validation needs val_fold (--val-fold K).")
        fold = load_fold(config.dataset, config.val_fold, config.data_root)
        runs = draw_runs(fold, config.val_episodes, config.val_seed)
        return cls(config, runs, head_protocol(config, None, RUN_WAYS, fresh=True))

    def evaluate(
        self, model: nn.Module, device: torch.device, callback: Callable[[int], None] | None = None
    ) -> list[float]:
        """Accuracy (``correct / items``) of ``model`` on each run; the model is left as it was."""
        alone = self.config.query_one_at_a_time
        correct = correct_counts(model, list(self.runs), self.config, self.protocol, device, alone, callback)
        return [c / len(run.test_files) for c, run in zip(correct, self.runs, strict=True)]


def errors_of(accuracies: list[float], items: int = RUN_WAYS) -> list[float]:
    """Per-run percent errors from per-run accuracies, computed as Lake's script does."""
    return [run_error(round(a * items), items) for a in accuracies]
