"""A tiny synthetic Omniglot release in the official extracted layout, and split files."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from fewnorm.data import files

BACKGROUND_ALPHABETS = (
    "Alphabet_of_the_Magi",
    "Anglo-Saxon_Futhorc",
    "Arcadian",
    "Armenian",
    "Asomtavruli_(Georgian)",
    "Balinese",
    "Bengali",
    "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille",
    "Burmese_(Myanmar)",
    "Cyrillic",
    "Early_Aramaic",
    "Futurama",
    "Grantha",
    "Greek",
    "Gujarati",
    "Hebrew",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Japanese_(hiragana)",
    "Japanese_(katakana)",
    "Korean",
    "Latin",
    "Malay_(Jawi_-_Arabic)",
    "Mkhedruli_(Georgian)",
    "N_Ko",
    "Ojibwe_(Canadian_Aboriginal_Syllabics)",
    "Sanskrit",
    "Syriac_(Estrangelo)",
    "Tagalog",
    "Tifinagh",
)
EVALUATION_ALPHABETS = ("Angelic", "Kannada")
CHARS, DRAWERS = 2, 2


def write_release(omniglot: Path, stem: str, alphabets: tuple[str, ...]) -> int:
    """Black-on-white 1-bit 105x105 PNGs, like the official scans; returns the image count."""
    count = 0
    for a, alphabet in enumerate(alphabets):
        for c in range(1, CHARS + 1):
            folder = omniglot / stem / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for d in range(1, DRAWERS + 1):
                image = Image.new("1", (105, 105), 1)
                ImageDraw.Draw(image).line((10 + a, 10 * c, 90, 20 * d), fill=0, width=6)
                image.save(folder / f"{a:04d}_{d:02d}.png")
                count += 1
    return count


def use_synthetic_release(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write both archives as folders under ``root/omniglot``; returns ``root``."""
    omniglot = root / "omniglot"
    for name, alphabets in (
        ("images_background.zip", BACKGROUND_ALPHABETS),
        ("images_evaluation.zip", EVALUATION_ALPHABETS),
    ):
        known = files.KNOWN_FILES[name]
        count = write_release(omniglot, known.stem, alphabets)
        # The folder check compares against the official image count; shrink it to ours.
        monkeypatch.setitem(files.KNOWN_FILES, name, dataclasses.replace(known, num_images=count))
    return root


def write_split_files(folder: Path, **splits: Iterable[str]) -> Path:
    """``train.txt``, ``val.txt`` and ``test.txt`` in ``folder``, one class per line."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in splits.items():
        (folder / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines))
    return folder
