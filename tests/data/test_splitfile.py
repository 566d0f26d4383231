"""Parsing and checking Omniglot split files (the Vinyals split format)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewnorm.data.splitfile import EVALUATION_ALPHABETS, SplitClass, read_split_files, split_folder
from fewnorm.errors import DataError
from tests.data.synthetic_release import write_split_files

TRAIN = ["Greek/character01/rot000", "Greek/character01/rot090", "Angelic/character02/rot270"]
VAL = ["Latin/character01"]
TEST = ["Kannada/character01/rot180", "Kannada/character02/rot000"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_split_files(tmp_path / "vinyals", train=TRAIN, val=VAL, test=TEST)


def test_classes_parse_sorted_with_rotations(folder: Path) -> None:
    splits = read_split_files(folder)
    assert splits.classes["train"] == (
        SplitClass("Angelic", "character02", 270),
        SplitClass("Greek", "character01", 0),
        SplitClass("Greek", "character01", 90),
    )
    assert [c.name for c in splits.classes["train"]] == [
        "Angelic/character02/rot270",
        "Greek/character01",
        "Greek/character01/rot90",
    ]
    assert splits.classes["val"] == (SplitClass("Latin", "character01", 0),)
    assert splits.alphabets("train", "val") == {"Angelic", "Greek", "Latin"}


def test_a_byte_order_mark_is_not_part_of_the_first_name(folder: Path) -> None:
    (folder / "val.txt").write_bytes(b"\xef\xbb\xbfLatin/character01\r\n")  # saved by a Windows editor
    assert read_split_files(folder).classes["val"] == (SplitClass("Latin", "character01", 0),)


def test_a_file_path_means_its_folder(folder: Path) -> None:
    assert split_folder(folder / "test.txt") == folder
    assert read_split_files(folder / "val.txt").classes == read_split_files(folder).classes


def test_digest_ignores_order_and_blank_lines_but_not_classes(folder: Path, tmp_path: Path) -> None:
    digest = read_split_files(folder).digest()
    shuffled = write_split_files(tmp_path / "b", train=["", *reversed(TRAIN), " "], val=VAL, test=TEST)
    assert read_split_files(shuffled).digest() == digest
    other = write_split_files(tmp_path / "c", train=TRAIN[:2], val=VAL, test=TEST)
    assert read_split_files(other).digest() != digest
    moved = write_split_files(tmp_path / "d", train=TRAIN, val=TEST, test=VAL)
    assert read_split_files(moved).digest() != digest  # same classes, other splits
    # A split's own digest (its cache key) ignores edits to the other splits.
    assert read_split_files(other).digest("val", "test") == read_split_files(folder).digest("val", "test")
    assert read_split_files(other).digest("train") != read_split_files(folder).digest("train")


@pytest.mark.parametrize(
    ("train", "match"),
    [
        (["Greek/character01/rot045"], r"train.txt:1: 'Greek/character01/rot045' is not a class"),
        (["Greek"], r"train.txt:1: 'Greek' is not a class"),
        (["", "Greek/character01/rot0"], r"train.txt:2: .* DDD one of 000, 090, 180, 270"),
        (["Greek/character01", "Greek/character01/rot000"], r"train.txt:2: .* listed twice"),
        (["Latin/character01/rot090"], r"Latin/character01 in both train.txt and val.txt"),
        ([""], r"train.txt lists no classes"),
    ],
)
def test_bad_split_files_name_file_and_line(tmp_path: Path, train: list[str], match: str) -> None:
    folder = write_split_files(tmp_path, train=train, val=VAL, test=TEST)
    with pytest.raises(DataError, match=match):
        read_split_files(folder)


def test_missing_files_and_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; pass a folder holding train.txt"):
        read_split_files(tmp_path / "nowhere")
    write_split_files(tmp_path, train=TRAIN)
    with pytest.raises(DataError, match=r"lacks val.txt, test.txt"):
        read_split_files(tmp_path)


def test_evaluation_alphabets_are_the_official_twenty() -> None:
    assert len(EVALUATION_ALPHABETS) == 20
    assert {"Angelic", "Kannada", "Tengwar", "ULOG"} <= EVALUATION_ALPHABETS
    assert not {"Greek", "Latin", "Korean"} & EVALUATION_ALPHABETS
