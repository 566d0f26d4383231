"""Omniglot splits: decode and resize the PNGs once, then serve a cached :class:`ImageStore`.

Splits (alphabet-disjoint between train and test in the first two datasets):

``omniglot``
    train: the 30 ``images_background`` alphabets minus :data:`VAL_ALPHABETS`
    (25 alphabets, 796 characters; rotated x4); val: :data:`VAL_ALPHABETS` (5 alphabets,
    168 characters, chosen once so that validation, like test, sees unseen alphabets and
    is about the size of the Vinyals validation split); test: the 20 ``images_evaluation``
    alphabets (659 characters).
``omniglot-minimal``
    train: ``images_background_small1`` (136 characters) minus a fixed 20% of its
    characters, drawn with ``torch.randperm`` from a generator seeded with 0 (109 left;
    rotated x4); val: those 27 characters; test: the :data:`MINIMAL_TEST_ALPHABETS` of
    ``images_background_small2`` that small1 lacks (106 characters).
``omniglot-vinyals``
    the classes (character and rotation) that the split files name, from both archives:
    the Vinyals split or any other in its format (:mod:`fewnorm.data.splitfile`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fewnorm.data.files import Source, require_sources
from fewnorm.data.registry import ROTATIONS, VINYALS, canonical_dataset, check_split, split_files
from fewnorm.data.root import omniglot_dir, resolve_data_root, store_cache_dir
from fewnorm.data.scans import decode_pngs, preprocess
from fewnorm.data.splitfile import SplitFiles, read_split_files
from fewnorm.data.store import STORE_VERSION, ImageStore, load_or_build
from fewnorm.errors import DataError, OptionError

log = logging.getLogger(__name__)

#: Bump when preprocessing changes: it is part of every cache key.
PREPROCESS_VERSION = 1
#: Background alphabets held out of ``omniglot`` training for validation (fixed, documented).
VAL_ALPHABETS: tuple[str, ...] = ("Armenian", "Bengali", "Cyrillic", "Futurama", "Hebrew")
#: The alphabets of ``images_background_small2`` absent from small1: the minimal test split.
MINIMAL_TEST_ALPHABETS: tuple[str, ...] = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
MINIMAL_VAL_FRACTION = 0.2
MINIMAL_VAL_SEED = 0

Character = tuple[str, str]  # (alphabet, character folder)


@dataclass(frozen=True)
class _PlannedClass:
    """One character to decode: its archive, its images and the rotations kept as classes."""

    character: Character
    source: Source
    images: list[str]
    rotations: tuple[int, ...]


def load_split(
    dataset: str,
    split: str,
    root: Path | str | None = None,
    *,
    image_size: int = 28,
    rotations: bool | None = None,
    split_file: Path | str | None = None,
    split_classes: str | None = None,
    lake_fold: int | None = None,
) -> ImageStore:
    """The preprocessed images of one split, from the cache or built once from the zips.

    Images are ``(N, 1, image_size, image_size)`` uint8, strokes 255 on a 0 background,
    classes sorted by alphabet then character, images by file name. ``rotations`` (default:
    only for ``"train"``) adds each character rotated by 90, 180 and 270 degrees as three
    more classes, right after the original and named ``"<Alphabet>/<character>/rot90"`` etc.
    ``omniglot-vinyals`` needs ``split_file`` (:func:`fewnorm.data.splitfile.split_folder`),
    whose lines decide the classes and their rotations in every split; ``split_classes``
    (a run's recorded :meth:`~fewnorm.data.splitfile.SplitFiles.digest`) must match them.
    ``lake_fold`` leaves the alphabet of that lake-style fold (:mod:`fewnorm.data.lakestyle`)
    out of the train split; the other splits are unchanged.
    """
    dataset = canonical_dataset(dataset)
    check_split(split)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise OptionError(f"image_size must be a positive integer, got {image_size!r}.")
    splits = _split_files(dataset, split_file, rotations, split_classes)
    rotate = (split == "train" if rotations is None else bool(rotations)) and splits is None
    if rotate and split != "train":
        raise OptionError(f"rotations apply to the train split only, not '{split}'.")
    data_root = resolve_data_root(root)
    sources = require_sources(
        omniglot_dir(data_root),
        split_files(dataset, split),
        needed_by=f"dataset '{dataset}' (split '{split}')",
    )
    exclude = _fold_alphabet(dataset, split, lake_fold, data_root, splits)
    key = _cache_key(dataset, split, image_size, rotate, sources, splits, exclude)
    rot = "-rot4" if rotate else ""
    cache_path = store_cache_dir(data_root) / f"{dataset}-{split}-{image_size}px{rot}-{key}.pt"

    def build() -> ImageStore:
        plan = _plan(dataset, split, sources, rotate, splits)
        return _build([c for c in plan if c.character[0] != exclude], image_size)

    return load_or_build(cache_path, build, f"{dataset}/{split}")


def _fold_alphabet(
    dataset: str, split: str, lake_fold: int | None, root: Path, splits: SplitFiles | None
) -> str | None:
    """The alphabet that ``lake_fold`` keeps out of the train split; ``None`` for no fold or other splits."""
    if lake_fold is None:
        return None
    if splits is not None:
        raise OptionError(f"lake-style folds apply to omniglot and omniglot-minimal, not {VINYALS}.")
    from fewnorm.data.lakestyle import fold_alphabet  # it reads this module's listings

    alphabet = fold_alphabet(dataset, lake_fold, root)
    return alphabet if split == "train" else None


def _split_files(
    dataset: str, split_file: Path | str | None, rotations: bool | None, split_classes: str | None
) -> SplitFiles | None:
    """The parsed split files that ``omniglot-vinyals`` needs; ``None`` for the other datasets."""
    if dataset != VINYALS:
        if split_file is not None:
            raise OptionError(f"split files apply to dataset {VINYALS} only, not '{dataset}'.")
        return None
    if split_file is None:
        raise OptionError(
            f"dataset {VINYALS} needs --split-file: a folder with train.txt, val.txt and test.txt "
            f"(Snell et al.'s data/omniglot/splits/vinyals/)."
        )
    if rotations is not None:
        raise OptionError(f"the split files decide the rotations of {VINYALS} classes; drop rotations.")
    splits = read_split_files(split_file)
    splits.check_digest(split_classes)
    return splits


def _cache_key(
    dataset: str,
    split: str,
    image_size: int,
    rotate: bool,
    sources: list[Source],
    splits: SplitFiles | None,
    exclude: str | None = None,
) -> str:
    spec = {
        "preprocess": PREPROCESS_VERSION,
        "store": STORE_VERSION,
        "dataset": dataset,
        "split": split,
        "image_size": image_size,
        "rotations": rotate,
        "val_alphabets": VAL_ALPHABETS,
        "minimal": [MINIMAL_TEST_ALPHABETS, MINIMAL_VAL_FRACTION, MINIMAL_VAL_SEED],
        "sources": [s.identity() for s in sources],
    }
    if splits is not None:  # only this split's classes: editing test.txt keeps the train cache
        spec["split_classes"] = splits.digest(split)
    if exclude is not None:  # only then: stores without a fold keep their keys
        spec["exclude_alphabet"] = exclude
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def characters(source: Source) -> dict[Character, list[str]]:
    """Image paths of ``source`` by (alphabet, character), both sorted."""
    chars: dict[Character, list[str]] = {}
    for rel in source.list_images():  # sorted, so each list is sorted by file name
        alphabet, character, _ = rel.split("/")
        chars.setdefault((alphabet, character), []).append(rel)
    return dict(sorted(chars.items()))


def _only_alphabets(
    chars: dict[Character, list[str]], alphabets: tuple[str, ...], source: Source, keep: bool
) -> dict[Character, list[str]]:
    """Characters of ``alphabets`` (``keep``) or of all others; every alphabet must exist."""
    missing = set(alphabets) - {a for a, _ in chars}
    if missing:
        raise DataError(
            f"{source.path} lacks the alphabets {', '.join(sorted(missing))}: not the official "
            f"{source.known.name}. Delete it and download it again."
        )
    return {k: v for k, v in chars.items() if (k[0] in alphabets) == keep}


def _plan(
    dataset: str, split: str, sources: list[Source], rotate: bool, splits: SplitFiles | None
) -> list[_PlannedClass]:
    """The characters of ``split`` in store order, each with its archive, images and rotations."""
    if splits is None:
        (source,) = sources  # each split of the fixed datasets reads exactly one archive
        kept = ROTATIONS if rotate else (0,)
        return [_PlannedClass(k, source, v, kept) for k, v in select(dataset, split, source).items()]
    found = {k: (src, v) for src in sources for k, v in characters(src).items()}
    wanted: dict[Character, list[int]] = {}
    for c in splits.classes[split]:  # sorted, so rotations come in increasing order
        wanted.setdefault((c.alphabet, c.character), []).append(c.degrees)
    absent = [f"{a}/{ch}" for a, ch in wanted if (a, ch) not in found]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise DataError(
            f"{splits.folder / (split + '.txt')} names characters that "
            f"{' and '.join(s.known.name for s in sources)} lack: {', '.join(absent[:3])}{more}."
        )
    return [_PlannedClass(k, *found[k], tuple(d)) for k, d in wanted.items()]


def select(dataset: str, split: str, source: Source) -> dict[Character, list[str]]:
    """The characters of ``split`` in one of the fixed datasets with their image paths, sorted."""
    chars = characters(source)
    if dataset == "omniglot":
        if split == "test":
            return chars
        return _only_alphabets(chars, VAL_ALPHABETS, source, keep=split == "val")
    if split == "test":
        return _only_alphabets(chars, MINIMAL_TEST_ALPHABETS, source, keep=True)
    keys = list(chars)
    gen = torch.Generator().manual_seed(MINIMAL_VAL_SEED)
    perm = torch.randperm(len(keys), generator=gen)
    val = {keys[i] for i in perm[: round(MINIMAL_VAL_FRACTION * len(keys))].tolist()}
    return {k: v for k, v in chars.items() if (k in val) == (split == "val")}


def _build(plan: list[_PlannedClass], image_size: int) -> ImageStore:
    images: dict[Path, torch.Tensor] = {}  # each archive decoded in one pass, in plan order
    for source in dict.fromkeys(c.source for c in plan):
        paths = [p for c in plan if c.source == source for p in c.images]
        images[source.path] = preprocess(decode_pngs(source.read(paths), paths), image_size)
    start = dict.fromkeys(images, 0)
    per_class: list[torch.Tensor] = []
    names: list[str] = []
    for c in plan:
        (alphabet, character), first = c.character, start[c.source.path]
        imgs = images[c.source.path][first : first + len(c.images)]  # (n, 1, s, s)
        start[c.source.path] += len(c.images)
        for degrees in c.rotations:
            # rot90 turns counter-clockwise in the (H, W) plane.
            per_class.append(torch.rot90(imgs, degrees // 90, dims=(2, 3)))
            suffix = f"/rot{degrees}" if degrees else ""
            names.append(f"{alphabet}/{character}{suffix}")
    return ImageStore.from_classes(per_class, names)
