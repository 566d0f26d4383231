"""Lake's one-shot classification runs (``all_runs.zip``), read and preprocessed like training.

Lake, Salakhutdinov and Tenenbaum, "Human-level concept learning through probabilistic
program induction", Science 2015. Twenty folders ``run01`` ... ``run20``, each with
``training/class01.png`` ... ``class20.png`` (one image of each of 20 characters of one
evaluation alphabet), ``test/item01.png`` ... ``item20.png`` and ``class_labels.txt``,
whose lines read ``runNN/test/itemXX.png runNN/training/classYY.png``: a test image and
its correct training image. The label file alone decides which answer is right.

Images go through the Omniglot training preprocessing (:func:`fewnorm.data.omniglot.preprocess`:
inverted, resized 105 -> 28 with antialiasing). The runs come as the zip (its entries
``run01/...`` at the top or under one folder) or as the folder it was extracted to.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fewnorm.data.registry import RUNS
from fewnorm.data.root import omniglot_dir, resolve_data_root
from fewnorm.data.scans import decode_pngs, preprocess
from fewnorm.errors import DataError

NUM_RUNS = 20
LABELS = "class_labels.txt"
RUN_NAMES: tuple[str, ...] = tuple(f"run{i:02d}" for i in range(1, NUM_RUNS + 1))
_LABELS_RE = re.compile(r"^(?P<prefix>(?:[^/]+/)*)run\d\d/" + re.escape(LABELS) + "$")


@dataclass(frozen=True)
class LakeRun:
    """One 20-way 1-shot run; candidates and test items sorted by file name, as the original."""

    name: str  # "run01"
    training_files: list[str]  # "run01/training/class01.png", sorted
    test_files: list[str]  # "run01/test/item01.png", sorted
    answers: list[int]  # per test item: the index in training_files of its correct image
    training: torch.Tensor  # (num_training, 1, S, S) uint8, strokes 255
    test: torch.Tensor  # (num_test, 1, S, S) uint8


def default_runs_path(root: Path | str | None = None) -> Path:
    """``<data root>/omniglot/all_runs.zip``, else its extracted folder ``all_runs/`` (if present)."""
    directory = omniglot_dir(resolve_data_root(root))
    folder = directory / RUNS.removesuffix(".zip")
    return folder if not (directory / RUNS).is_file() and folder.is_dir() else directory / RUNS


class _Archive:
    """The runs' files in a zip or a folder, by their path relative to ``all_runs/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file():
            try:
                self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(
                    f"{path} is not a readable zip ({exc}); delete it and download it again."
                ) from None
            names = [n for n in self._zip.namelist() if not n.startswith("__MACOSX")]
        elif path.is_dir():
            self._zip = None
            names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        else:
            raise DataError(
                f"Lake's one-shot runs not found at {path}; get them with `fewnorm data download "
                f"omniglot` (it fetches {RUNS}) or pass --runs PATH (the zip or its folder)."
            )
        prefixes = sorted({m["prefix"] for n in names if (m := _LABELS_RE.match(n))}, key=len)
        if not prefixes:
            raise DataError(f"{path} holds no runNN/{LABELS}: not Lake's {RUNS}.")
        self.prefix = prefixes[0]  # "" or the one folder the runs sit in
        self.names = {n[len(self.prefix) :] for n in names if n.startswith(self.prefix)}

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self.prefix + rel)
        return (self.path / self.prefix / rel).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def load_runs(path: Path, *, image_size: int = 28) -> list[LakeRun]:
    """The 20 runs at ``path`` (zip or folder), images preprocessed to ``image_size``."""
    archive = _Archive(Path(path))
    try:
        missing = [run for run in RUN_NAMES if f"{run}/{LABELS}" not in archive.names]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}: Lake's {RUNS} has {NUM_RUNS} runs.")
        specs = [_parse_run(archive, run) for run in RUN_NAMES]
        files = [f for _, training, test, _ in specs for f in (*training, *test)]
        images = preprocess(decode_pngs([archive.read(f) for f in files], files), image_size)
    finally:
        archive.close()
    runs, start = [], 0
    for run, training, test, answers in specs:
        block = images[start : start + len(training) + len(test)]  # (n_train + n_test, 1, S, S)
        start += len(training) + len(test)
        runs.append(LakeRun(run, training, test, answers, block[: len(training)], block[len(training) :]))
    return runs


def _parse_run(archive: _Archive, run: str) -> tuple[str, list[str], list[str], list[int]]:
    """``(run, training files, test files, answers)`` from the run's own label file."""
    where = f"{archive.path} ({run}/{LABELS})"
    try:
        text = archive.read(f"{run}/{LABELS}").decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where} is not text.") from None
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if (
            len(fields) != 2
            or not fields[0].startswith(f"{run}/test/")
            or not fields[1].startswith(f"{run}/training/")
        ):
            raise DataError(
                f"{where} line {number}: expected '{run}/test/itemXX.png {run}/training/classYY.png'."
            )
        if fields[0] in pairs:
            raise DataError(f"{where} lists {fields[0]} twice.")
        pairs[fields[0]] = fields[1]
    training = sorted(n for n in archive.names if n.startswith(f"{run}/training/") and n.endswith(".png"))
    absent = sorted({*pairs, *pairs.values()} - archive.names)
    if not pairs or absent:
        problem = f"names missing files ({', '.join(absent[:3])})" if absent else "is empty"
        raise DataError(f"{where} {problem}: the runs are incomplete; download {RUNS} again.")
    strange = sorted(answer for answer in pairs.values() if answer not in training)
    if strange:
        raise DataError(f"{where} answers with {strange[0]}, which is not a training PNG.")
    test = sorted(pairs)
    return run, training, test, [training.index(pairs[item]) for item in test]
