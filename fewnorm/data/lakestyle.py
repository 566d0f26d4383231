"""Lake-style validation folds: leave one training alphabet out, keep its drawers apart.

Lake's one-shot runs (``all_runs.zip``) are 20-way 1-shot tasks whose 20 characters come
from one alphabet and whose training and test images were drawn by different people. A
lake-style fold imitates them on data we may use: fold ``K`` of ``omniglot`` or
``omniglot-minimal`` is the ``K``-th (by name) of the alphabets that the dataset trains on
and that have at least :data:`RUN_WAYS` characters. A run validated on fold ``K`` trains
without that alphabet (``load_split(..., lake_fold=K)``), and its runs are drawn from all
of the alphabet's characters in the training archive (for ``omniglot-minimal`` that
includes the characters of its val split, which no run trains on either).

Drawers: in the Omniglot archives a character's images are ``XXXX_DD.png``, ``XXXX`` the
character's number and ``DD`` the drawer (``01`` ... ``20``); the listing is sorted, so
store row ``i`` of a character is its ``i``-th file. :func:`load_fold` reads ``DD`` from
each file name rather than assuming it, and refuses an archive named otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fewnorm.data.files import Source, require_sources
from fewnorm.data.omniglot import (
    PREPROCESS_VERSION,
    Character,
    _build,
    _PlannedClass,
    characters,
    select,
)
from fewnorm.data.registry import canonical_dataset, datasets_supporting, split_files, supports
from fewnorm.data.root import omniglot_dir, resolve_data_root, store_cache_dir
from fewnorm.data.store import STORE_VERSION, ImageStore, load_or_build
from fewnorm.errors import ConfigError, DataError

#: The validation protocol's name (``--val-protocol`` and ``--benchmark``).
LAKE_STYLE = "lake-style"
#: Every lake-style run is 20-way 1-shot, as Lake's.
RUN_WAYS = 20
_FILE_RE = re.compile(r"^\d{4}_(?P<drawer>\d{2})\.png$")


@dataclass(frozen=True)
class Fold:
    """One held-out alphabet: its characters' images and, per image, who drew it."""

    dataset: str
    index: int
    alphabet: str
    store: ImageStore  # every character of the alphabet, no rotations; rows sorted by file name
    drawers: tuple[tuple[int, ...], ...]  # per class: the drawer of each of its store rows

    def row(self, cls: int, drawer: int) -> int:
        """The store row of class ``cls``'s image by ``drawer``."""
        return int(self.store.class_starts[cls]) + self.drawers[cls].index(drawer)


def drawer_of(path: str) -> int:
    """The drawer ``DD`` of an Omniglot image path ``.../XXXX_DD.png``."""
    match = _FILE_RE.match(path.rsplit("/", 1)[-1])
    if match is None:
        raise DataError(
            f"image {path} is not named XXXX_DD.png (character, drawer): lake-style runs need the "
            f"drawer of every image; use the official Omniglot archives."
        )
    return int(match["drawer"])


def _source(dataset: str, root: Path) -> Source:
    dataset = canonical_dataset(dataset)
    if not supports(dataset, LAKE_STYLE):
        raise ConfigError(
            f"lake-style folds are defined on {' and '.join(datasets_supporting(LAKE_STYLE))}, "
            f"not '{dataset}'."
        )
    (source,) = require_sources(
        omniglot_dir(root), split_files(dataset, "train"), needed_by=f"lake-style folds of '{dataset}'"
    )
    return source


def _alphabets(dataset: str, source: Source) -> tuple[str, ...]:
    """Training alphabets of ``dataset`` with at least :data:`RUN_WAYS` characters, sorted."""
    trained = {a for a, _ in select(canonical_dataset(dataset), "train", source)}
    counts: dict[str, int] = {}
    for alphabet, _ in characters(source):
        counts[alphabet] = counts.get(alphabet, 0) + 1
    return tuple(sorted(a for a in trained if counts[a] >= RUN_WAYS))


def fold_alphabets(dataset: str, root: Path | str | None = None) -> tuple[str, ...]:
    """The held-out alphabet of each fold of ``dataset``, fold ``K`` at index ``K``."""
    return _alphabets(dataset, _source(dataset, resolve_data_root(root)))


def fold_alphabet(dataset: str, fold: int, root: Path | str | None = None) -> str:
    """The alphabet that fold ``fold`` of ``dataset`` holds out; a clear error when out of range."""
    alphabets = fold_alphabets(dataset, root)
    if not 0 <= fold < len(alphabets):
        listing = ", ".join(f"{i} {a}" for i, a in enumerate(alphabets))
        raise ConfigError(
            f"--val-fold {fold} is out of range: {canonical_dataset(dataset)} has {len(alphabets)} "
            f"lake-style folds ({listing})."
        )
    return alphabets[fold]


def training_alphabets(dataset: str, lake_fold: int | None, root: Path | str | None = None) -> set[str]:
    """Alphabets of the training classes of a run on ``dataset`` validated on ``lake_fold`` (or none)."""
    source = _source(dataset, resolve_data_root(root))
    trained = {a for a, _ in select(canonical_dataset(dataset), "train", source)}
    if lake_fold is not None:
        trained.discard(fold_alphabet(dataset, lake_fold, root))
    return trained


def load_fold(dataset: str, fold: int, root: Path | str | None = None, *, image_size: int = 28) -> Fold:
    """Fold ``fold`` of ``dataset``: its alphabet's images (cached) and their drawers."""
    data_root = resolve_data_root(root)
    source = _source(dataset, data_root)
    dataset = canonical_dataset(dataset)
    alphabet = fold_alphabet(dataset, fold, data_root)
    chars: dict[Character, list[str]] = {k: v for k, v in characters(source).items() if k[0] == alphabet}
    drawers = tuple(tuple(drawer_of(p) for p in paths) for paths in chars.values())
    for (a, ch), found in zip(chars, drawers, strict=True):
        if len(set(found)) != len(found):
            raise DataError(
                f"{source.path}: {a}/{ch} has two images by one drawer; not the official archive."
            )
    spec = {
        "lake_style": 1,
        "preprocess": PREPROCESS_VERSION,
        "store": STORE_VERSION,
        "dataset": dataset,
        "alphabet": alphabet,
        "image_size": image_size,
        "source": source.identity(),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cache_path = store_cache_dir(data_root) / f"{dataset}-lake-style-{image_size}px-{key}.pt"
    plan = [_PlannedClass(k, source, v, (0,)) for k, v in chars.items()]
    store = load_or_build(cache_path, lambda: _build(plan, image_size), f"{dataset}/lake-style/{alphabet}")
    return Fold(dataset, fold, alphabet, store, drawers)
