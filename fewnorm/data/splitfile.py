"""Omniglot split files: the Vinyals split of Matching and Prototypical Networks, or your own.

A split-file folder holds ``train.txt``, ``val.txt`` and ``test.txt``, the layout of
``data/omniglot/splits/vinyals/`` in Snell et al.'s code (1028 / 172 / 423 characters,
each in four rotations). Each line names one class, ``Alphabet/characterNN/rotDDD``
(``Angelic/character01/rot090``); a line without ``/rotDDD`` names the unrotated
character. Classes come from ``images_background`` and ``images_evaluation`` together,
so the training split of the Vinyals split holds evaluation alphabets, the alphabets of
Lake's one-shot runs. No torch import.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fewnorm.data.registry import ROTATIONS, SPLITS, VINYALS
from fewnorm.errors import DataError

#: The file of each split inside a split-file folder.
SPLIT_FILE_NAMES: dict[str, str] = {split: f"{split}.txt" for split in SPLITS}
#: The 20 alphabets of ``images_evaluation`` (Lake's one-shot runs draw on these).
EVALUATION_ALPHABETS: frozenset[str] = frozenset(
    (
        "Angelic",
        "Atemayar_Qelisayer",
        "Atlantean",
        "Aurek-Besh",
        "Avesta",
        "Ge_ez",
        "Glagolitic",
        "Gurmukhi",
        "Kannada",
        "Keble",
        "Malayalam",
        "Manipuri",
        "Mongolian",
        "Old_Church_Slavonic_(Cyrillic)",
        "Oriya",
        "Sylheti",
        "Syriac_(Serto)",
        "Tengwar",
        "Tibetan",
        "ULOG",
    )
)
_LINE = re.compile(r"(?P<alphabet>[^/\s]+)/(?P<character>[^/\s]+)(?:/rot(?P<degrees>\d{3}))?")


@dataclass(frozen=True, order=True)
class SplitClass:
    """One class of a split file: a character, rotated counter-clockwise by ``degrees``."""

    alphabet: str
    character: str
    degrees: int = 0

    @property
    def name(self) -> str:
        """The class name in an :class:`~fewnorm.data.store.ImageStore` (``Greek/character01/rot90``)."""
        suffix = f"/rot{self.degrees}" if self.degrees else ""
        return f"{self.alphabet}/{self.character}{suffix}"


@dataclass(frozen=True)
class SplitFiles:
    """The parsed classes of every split, sorted, and a digest of them for cache keys."""

    folder: Path
    classes: dict[str, tuple[SplitClass, ...]]

    def digest(self, *splits: str) -> str:
        """SHA256 of the sorted classes of ``splits`` (default: all); line order does not count."""
        text = "\n".join(f"{split}\t{c.name}" for split in splits or SPLITS for c in self.classes[split])
        return hashlib.sha256(text.encode()).hexdigest()

    def check_digest(self, expected: str | None) -> None:
        """Raise :class:`DataError` unless these files name the classes a run recorded (``None``: any)."""
        if expected is not None and self.digest() != expected:
            raise DataError(
                f"the split files in {self.folder} name other classes than the run was trained on "
                f"(classes sha256 {self.digest()[:12]}, recorded {expected[:12]}); restore them, or "
                f"point --split-file at the original files."
            )

    def alphabets(self, *splits: str) -> set[str]:
        """The alphabets that classes of ``splits`` draw on."""
        return {c.alphabet for split in splits for c in self.classes[split]}


def split_folder(path: Path | str) -> Path:
    """The folder of a split-file path: the folder itself, or the folder of one of its files."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise DataError(
        f"split file '{path}' does not exist; pass a folder holding train.txt, val.txt and "
        f"test.txt (Snell et al.'s data/omniglot/splits/vinyals/) or one of those files."
    )


def read_split_files(path: Path | str) -> SplitFiles:
    """Parse and check the split files at ``path`` (see :func:`split_folder`).

    Raises :class:`DataError` naming the file and line of a malformed class, a class listed
    twice, or a character in more than one split (splits must be character-disjoint).
    """
    folder = split_folder(path)
    missing = [name for name in SPLIT_FILE_NAMES.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"split-file folder {folder} lacks {', '.join(missing)}; {VINYALS} needs "
            f"{', '.join(SPLIT_FILE_NAMES.values())}, one class per line (Alphabet/characterNN/rotDDD)."
        )
    classes = {split: _read_one(folder / name) for split, name in SPLIT_FILE_NAMES.items()}
    owner: dict[tuple[str, str], str] = {}
    for split, entries in classes.items():
        for c in entries:
            first = owner.setdefault((c.alphabet, c.character), split)
            if first != split:
                raise DataError(
                    f"split files in {folder} put {c.alphabet}/{c.character} in both {first}.txt "
                    f"and {split}.txt; splits must not share characters."
                )
    return SplitFiles(folder, classes)


def _read_one(path: Path) -> tuple[SplitClass, ...]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of a name
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    seen: set[SplitClass] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        degrees = int(match["degrees"] or 0) if match else -1
        if match is None or degrees not in ROTATIONS:
            raise DataError(
                f"{path}:{number}: '{line}' is not a class; write Alphabet/characterNN or "
                f"Alphabet/characterNN/rotDDD with DDD one of 000, 090, 180, 270."
            )
        entry = SplitClass(match["alphabet"], match["character"], degrees)
        if entry in seen:
            raise DataError(f"{path}:{number}: class '{line}' is listed twice.")
        seen.add(entry)
    if not seen:
        raise DataError(f"split file {path} lists no classes.")
    return tuple(sorted(seen))
