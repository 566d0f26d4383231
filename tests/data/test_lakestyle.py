"""Lake-style folds of omniglot-minimal from the real small1 zip: alphabets apart, drawers from names."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from fewnorm.config import RunConfig
from fewnorm.data import load_split
from fewnorm.data.lakestyle import (
    Fold,
    drawer_of,
    fold_alphabet,
    fold_alphabets,
    load_fold,
    training_alphabets,
)
from fewnorm.episodes.lake_style import LakeStyleValidator, draw_runs, errors_of
from fewnorm.errors import ConfigError
from tests.episodes.test_lake_style import Memorizer

pytestmark = pytest.mark.data

SMALL1_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")


@pytest.fixture(scope="module")
def folds(omniglot_root: Path) -> list[Fold]:
    return [load_fold("omniglot-minimal", k, omniglot_root) for k in range(len(SMALL1_ALPHABETS))]


def _alphabets(names: list[str]) -> set[str]:
    return {n.split("/")[0] for n in names}


def test_one_fold_per_small1_alphabet_in_name_order(omniglot_root: Path, folds: list[Fold]) -> None:
    assert fold_alphabets("omniglot-minimal", omniglot_root) == SMALL1_ALPHABETS
    for k, fold in enumerate(folds):
        assert fold.alphabet == SMALL1_ALPHABETS[k] == fold_alphabet("omniglot-minimal", k, omniglot_root)
        assert _alphabets(fold.store.class_names) == {fold.alphabet}
    # Every character of small1 is in exactly one fold (val characters included).
    assert sum(f.store.num_classes for f in folds) == 136
    with pytest.raises(ConfigError, match=r"--val-fold 5 is out of range: .* \(0 Balinese, 1 Early_Aramaic"):
        fold_alphabet("omniglot-minimal", 5, omniglot_root)


def test_training_without_a_fold_never_sees_its_alphabet(omniglot_root: Path, folds: list[Fold]) -> None:
    full = load_split("omniglot-minimal", "train", omniglot_root)
    for fold in folds:
        train = load_split("omniglot-minimal", "train", omniglot_root, lake_fold=fold.index)
        assert _alphabets(train.class_names) == set(SMALL1_ALPHABETS) - {fold.alphabet}
        assert train.class_names == [n for n in full.class_names if not n.startswith(fold.alphabet + "/")]
        trained = training_alphabets("omniglot-minimal", fold.index, omniglot_root)
        assert trained == _alphabets(train.class_names)
    # The val and test splits are those of the dataset, fold or not.
    for split in ("val", "test"):
        held = load_split("omniglot-minimal", split, omniglot_root, lake_fold=0)
        assert held.class_names == load_split("omniglot-minimal", split, omniglot_root).class_names


def test_drawers_come_from_the_zip_listing(omniglot_root: Path, folds: list[Fold]) -> None:
    with zipfile.ZipFile(omniglot_root / "omniglot" / "images_background_small1.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
    for fold in folds:
        for cls, name in enumerate(fold.store.class_names):
            files = [n for n in names if n.split("/")[1:3] == name.split("/")]
            assert fold.drawers[cls] == tuple(drawer_of(f) for f in files) == tuple(range(1, 21))
            first = {f.rsplit("/", 1)[1][:4] for f in files}
            assert len(first) == 1  # XXXX: one number per character, DD: the drawer


def test_support_and_query_drawers_differ_in_every_run(folds: list[Fold]) -> None:
    for fold in folds:
        for run in draw_runs(fold, 100, seed=10_000_000):
            rows_to_drawer = {
                int(fold.store.class_starts[c]) + i: d for c in range(fold.store.num_classes)
                for i, d in enumerate(fold.drawers[c])
            }  # fmt: skip
            support = {rows_to_drawer[r] for r in run.support_rows}
            query = {rows_to_drawer[r] for r in run.query_rows}
            assert support.isdisjoint(query)
            assert torch.equal(run.training, fold.store.images[list(run.support_rows)])


def test_memorizing_the_training_images_gets_no_credit(omniglot_root: Path, folds: list[Fold]) -> None:
    config = RunConfig(norm="groupnorm")
    for fold in folds[:2]:
        runs = draw_runs(fold, 40, seed=20_000_000)
        train = load_split("omniglot-minimal", "train", omniglot_root, lake_fold=fold.index)
        errors = errors_of(
            LakeStyleValidator(config, runs, None).evaluate(Memorizer(train), torch.device("cpu"))
        )
        assert errors == [95.0] * 40  # nothing recognised: chance, every run
        # Had the fold's alphabet been trained on, the same memorizer would score (almost) perfectly.
        leak = load_split("omniglot-minimal", "train", omniglot_root)
        leaked = errors_of(
            LakeStyleValidator(config, runs, None).evaluate(Memorizer(leak), torch.device("cpu"))
        )
        assert sum(leaked) / len(leaked) < 40
