"""The full ``omniglot`` split rules on a tiny synthetic extracted release (no zips needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from fewnorm.data import files, load_split
from fewnorm.data.omniglot import VAL_ALPHABETS
from fewnorm.errors import DataError
from tests.data.synthetic_release import BACKGROUND_ALPHABETS, CHARS, DRAWERS, EVALUATION_ALPHABETS


def test_background_alphabets_split_into_train_and_val(synthetic_root: Path) -> None:
    train = load_split("omniglot", "train", synthetic_root)
    val = load_split("omniglot", "val", synthetic_root)
    train_alphabets = {n.split("/")[0] for n in train.class_names}
    val_alphabets = {n.split("/")[0] for n in val.class_names}
    assert val_alphabets == set(VAL_ALPHABETS)
    assert len(VAL_ALPHABETS) == 5
    assert train_alphabets == set(BACKGROUND_ALPHABETS) - set(VAL_ALPHABETS)
    assert train.num_classes == 25 * CHARS * 4
    assert val.num_classes == 5 * CHARS
    assert train.class_sizes.tolist() == [DRAWERS] * train.num_classes
    assert train.images.shape == (25 * CHARS * 4 * DRAWERS, 1, 28, 28)


def test_evaluation_is_the_test_split(synthetic_root: Path) -> None:
    test = load_split("omniglot", "test", synthetic_root)
    assert test.class_names == [
        f"{a}/character{c:02d}" for a in EVALUATION_ALPHABETS for c in range(1, CHARS + 1)
    ]
    # Strokes drawn black on white come out bright on a dark background.
    assert test.images.float().mean() < 60
    assert int(test.images.max()) > 200


def test_images_in_file_name_order(synthetic_root: Path) -> None:
    test = load_split("omniglot", "test", synthetic_root, image_size=105)
    alphabet = EVALUATION_ALPHABETS[0]
    folder = synthetic_root / "omniglot" / "images_evaluation" / alphabet / "character01"
    for row, png in enumerate(sorted(folder.glob("*.png"))):
        scan = torch.frombuffer(bytearray(Image.open(png).convert("L").tobytes()), dtype=torch.uint8).view(
            105, 105
        )
        assert torch.equal(test.images[row, 0], 255 - scan)


def test_missing_val_alphabet_is_reported(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    background = synthetic_root / "omniglot" / "images_background"
    hebrew = background / "Hebrew"
    for png in hebrew.glob("*/*.png"):
        png.unlink()
    for folder in sorted(hebrew.glob("*"), reverse=True):
        folder.rmdir()
    hebrew.rmdir()
    known = files.KNOWN_FILES["images_background.zip"]
    monkeypatch.setitem(
        files.KNOWN_FILES,
        "images_background.zip",
        dataclasses.replace(known, num_images=known.num_images - CHARS * DRAWERS),
    )
    with pytest.raises(DataError, match="lacks the alphabets Hebrew"):
        load_split("omniglot", "val", synthetic_root)


def test_incomplete_folder_is_reported(synthetic_root: Path) -> None:
    next((synthetic_root / "omniglot" / "images_evaluation").glob("*/*/*.png")).unlink()
    with pytest.raises(DataError, match="incomplete"):
        load_split("omniglot", "test", synthetic_root)
