"""``omniglot-vinyals``: classes and rotations from split files, drawn from both archives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from fewnorm.data import dataset_files, load_split
from fewnorm.data.splitfile import read_split_files
from fewnorm.errors import DataError, OptionError
from tests.data.synthetic_release import DRAWERS, write_split_files

TRAIN = [
    "Greek/character01/rot000",
    "Greek/character01/rot090",
    "Greek/character01/rot180",
    "Greek/character01/rot270",
    "Angelic/character02/rot000",
    "Angelic/character02/rot090",
]
VAL = ["Latin/character01/rot000", "Latin/character02/rot000"]
TEST = ["Kannada/character01/rot000", "Kannada/character01/rot270", "Korean/character02"]


@pytest.fixture
def splits(tmp_path: Path) -> Path:
    return write_split_files(tmp_path / "vinyals", train=TRAIN, val=VAL, test=TEST)


def test_dataset_reads_both_archives() -> None:
    assert dataset_files("omniglot-vinyals") == ["images_background.zip", "images_evaluation.zip"]


def test_classes_are_exactly_the_split_files(synthetic_root: Path, splits: Path) -> None:
    train = load_split("omniglot-vinyals", "train", synthetic_root, split_file=splits)
    assert train.class_names == [
        "Angelic/character02",
        "Angelic/character02/rot90",
        "Greek/character01",
        "Greek/character01/rot90",
        "Greek/character01/rot180",
        "Greek/character01/rot270",
    ]
    assert train.class_sizes.tolist() == [DRAWERS] * 6
    test = load_split("omniglot-vinyals", "test", synthetic_root, split_file=splits / "test.txt")
    assert test.class_names == ["Kannada/character01", "Kannada/character01/rot270", "Korean/character02"]
    val = load_split("omniglot-vinyals", "val", synthetic_root, split_file=splits)
    assert val.num_classes == 2


def test_rotations_turn_counter_clockwise_like_pil(synthetic_root: Path, splits: Path) -> None:
    """Snell et al. rotate with PIL's ``Image.rotate(degrees)``: counter-clockwise."""
    train = load_split("omniglot-vinyals", "train", synthetic_root, split_file=splits)
    images = train.images.view(6, DRAWERS, 28, 28)  # classes in store order
    upright = images[2]  # Greek/character01
    assert not torch.equal(upright, torch.rot90(upright, 1, dims=(1, 2)))  # asymmetric strokes
    for index, degrees in ((3, 90), (4, 180), (5, 270)):
        for drawer in range(DRAWERS):
            pil = Image.fromarray(upright[drawer].numpy()).rotate(degrees)
            expected = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8).view(28, 28)
            assert torch.equal(images[index, drawer], expected), degrees


def test_cache_follows_the_split_files(synthetic_root: Path, splits: Path, tmp_path: Path) -> None:
    first = load_split("omniglot-vinyals", "val", synthetic_root, split_file=splits)
    other = write_split_files(tmp_path / "other", train=TRAIN, val=VAL[:1], test=TEST)
    second = load_split("omniglot-vinyals", "val", synthetic_root, split_file=other)
    assert first.num_classes == 2 and second.num_classes == 1


def test_editing_one_split_keeps_the_others_cached(
    synthetic_root: Path, splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewnorm.data import omniglot

    train = load_split("omniglot-vinyals", "train", synthetic_root, split_file=splits)
    (splits / "test.txt").write_text("Korean/character01\n")

    def no_decoding(*args: object) -> torch.Tensor:
        raise AssertionError("decoded although a cached store exists")

    monkeypatch.setattr(omniglot, "decode_pngs", no_decoding)
    again = load_split("omniglot-vinyals", "train", synthetic_root, split_file=splits)
    assert torch.equal(again.images, train.images)


def test_recorded_classes_must_match_the_files(synthetic_root: Path, splits: Path) -> None:
    recorded = read_split_files(splits).digest()
    val = load_split("omniglot-vinyals", "val", synthetic_root, split_file=splits, split_classes=recorded)
    assert val.num_classes == 2
    write_split_files(splits, train=TRAIN[:2], val=VAL, test=TEST)
    with pytest.raises(DataError, match=r"name other classes than the run was trained on .* recorded "):
        load_split("omniglot-vinyals", "val", synthetic_root, split_file=splits, split_classes=recorded)


def test_unknown_characters_are_named(synthetic_root: Path, tmp_path: Path) -> None:
    bad = write_split_files(
        tmp_path / "bad", train=["Greek/character09", "Klingon/character01/rot090"], val=VAL, test=TEST
    )
    with pytest.raises(
        DataError, match=r"train.txt names characters that .* lack: Greek/character09, Klingon"
    ):
        load_split("omniglot-vinyals", "train", synthetic_root, split_file=bad)


def test_split_file_is_required_and_exclusive(synthetic_root: Path, splits: Path) -> None:
    with pytest.raises(OptionError, match="omniglot-vinyals needs --split-file"):
        load_split("omniglot-vinyals", "train", synthetic_root)
    with pytest.raises(OptionError, match="split files apply to dataset omniglot-vinyals only"):
        load_split("omniglot", "train", synthetic_root, split_file=splits)
    with pytest.raises(OptionError, match="split files decide the rotations"):
        load_split("omniglot-vinyals", "train", synthetic_root, split_file=splits, rotations=False)
