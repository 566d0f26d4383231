"""Lake-style folds of ``omniglot`` on the synthetic release (two characters per alphabet, two drawers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewnorm.data import lakestyle, load_split
from fewnorm.data.omniglot import VAL_ALPHABETS
from fewnorm.errors import ConfigError
from tests.data.synthetic_release import BACKGROUND_ALPHABETS


def test_omniglot_folds_are_its_training_alphabets(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="has 0 lake-style folds"):  # 2 characters: too few for 20-way runs
        lakestyle.fold_alphabet("omniglot", 0, synthetic_root)
    monkeypatch.setattr(lakestyle, "RUN_WAYS", 2)
    folds = lakestyle.fold_alphabets("omniglot", synthetic_root)
    assert folds == tuple(
        sorted(set(BACKGROUND_ALPHABETS) - set(VAL_ALPHABETS))
    )  # validation alphabets: no folds
    for k in (0, len(folds) - 1):
        train = load_split("omniglot", "train", synthetic_root, lake_fold=k)
        alphabets = {n.split("/")[0] for n in train.class_names}
        assert alphabets == set(folds) - {folds[k]}
        fold = lakestyle.load_fold("omniglot", k, synthetic_root)
        assert {n.split("/")[0] for n in fold.store.class_names} == {folds[k]}
        assert fold.drawers == ((1, 2), (1, 2))
