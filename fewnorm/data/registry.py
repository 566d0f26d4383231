"""Dataset and split names, and the files each dataset needs (no torch import)."""

from __future__ import annotations

from fewnorm.errors import DataError
from fewnorm.names import normalize_name, unknown_name

BACKGROUND = "images_background.zip"
EVALUATION = "images_evaluation.zip"
SMALL1 = "images_background_small1.zip"
SMALL2 = "images_background_small2.zip"
#: Lake's 20 one-shot classification runs (no published checksum: size only).
RUNS = "all_runs.zip"
#: miniImageNet; its files depend on the layout users arrive with (see :mod:`fewnorm.data.minifiles`).
MINI_IMAGENET = "mini-imagenet"

#: Omniglot classes from user-provided split files (:mod:`fewnorm.data.splitfile`).
VINYALS = "omniglot-vinyals"
#: The Omniglot datasets, served from the official zips, by canonical name.
DATASETS: tuple[str, ...] = ("omniglot", "omniglot-minimal", VINYALS)
#: Every dataset :func:`fewnorm.data.load_split` serves, by canonical name.
ALL_DATASETS: tuple[str, ...] = (*DATASETS, MINI_IMAGENET)

#: Split names, in the order runs use them.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Degrees of the rotated copies of a character that count as classes of their own.
ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)

#: Zips each split reads (train and val share their archive: val is held out of it).
_SPLIT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "omniglot": {"train": (BACKGROUND,), "val": (BACKGROUND,), "test": (EVALUATION,)},
    "omniglot-minimal": {"train": (SMALL1,), "val": (SMALL1,), "test": (SMALL2,)},
    # Split files pick classes from both archives (the Vinyals split mixes them).
    VINYALS: {split: (BACKGROUND, EVALUATION) for split in ("train", "val", "test")},
}

#: The download subsets of ``fewnorm data download`` (``full`` and ``all`` add Lake's runs).
SUBSETS: dict[str, tuple[str, ...]] = {
    "minimal": (SMALL1, SMALL2),
    "full": (BACKGROUND, EVALUATION, RUNS),
    "all": (BACKGROUND, EVALUATION, SMALL1, SMALL2, RUNS),
}

#: The subset that ``fewnorm data download DATASET`` fetches when none is named.
DEFAULT_SUBSET: dict[str, str] = {"omniglot": "full", "omniglot-minimal": "minimal", VINYALS: "full"}


def canonical_dataset(name: str) -> str:
    """The canonical name of dataset ``name`` (case, ``_``, ``-`` and spaces ignored).

    Raises :class:`~fewnorm.errors.UnknownNameError` with the closest match otherwise.
    """
    key = normalize_name(name)
    for known in ALL_DATASETS:
        if normalize_name(known) == key:
            return known
    raise unknown_name("dataset", name, ALL_DATASETS)


def _omniglot_dataset(name: str) -> str:
    """The canonical name of Omniglot dataset ``name``: the datasets with a fixed zip list."""
    key = normalize_name(name)
    for known in DATASETS:
        if normalize_name(known) == key:
            return known
    if key == normalize_name(MINI_IMAGENET):
        raise DataError(
            f"{MINI_IMAGENET} has no fixed file list (it reads one of three layouts); "
            f"check its files with `fewnorm data verify {MINI_IMAGENET}`."
        )
    raise unknown_name("dataset", name, DATASETS)


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`DataError`."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}.")
    return split


def dataset_files(dataset: str) -> list[str]:
    """The zip names that Omniglot ``dataset`` needs for all its splits, in a stable order."""
    per_split = _SPLIT_FILES[_omniglot_dataset(dataset)]
    return list(dict.fromkeys(name for split in SPLITS for name in per_split[split]))


def split_files(dataset: str, split: str) -> list[str]:
    """The zip names that one split of Omniglot ``dataset`` reads."""
    return list(_SPLIT_FILES[_omniglot_dataset(dataset)][check_split(split)])


def subset_files(subset: str) -> list[str]:
    """The zip names of a download subset (``minimal``, ``full`` or ``all``)."""
    if subset not in SUBSETS:
        raise DataError(f"unknown subset '{subset}'; use one of: {', '.join(SUBSETS)}.")
    return list(SUBSETS[subset])
