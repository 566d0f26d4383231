"""The miniImageNet files: the three layouts, locating a split, reading it raw, verifying.

No torch import: ``fewnorm data verify`` and ``download`` use this module alone. Reading a
pickle needs numpy (the arrays inside are numpy arrays).

Layouts, looked for in ``<data root>/mini-imagenet/`` in this order (:data:`LAYOUTS`):

``pickle``
    learn2learn's ``mini-imagenet-cache-{train,validation,test}.pkl`` (torchmeta names the
    middle one ``val``): ``image_data`` uint8 ``(N, 84, 84, 3)`` and ``class_dict``, class
    name -> row indices.
``category``
    MetaOptNet's ``miniImageNet_category_split_{train_phase_train,val,test}.pickle``
    (``data``, ``labels`` and, where present, ``catname2label``; Python 2 pickles, read with
    latin1 encoding). Without ``catname2label`` a class is named by its label.
``csv``
    Ravi's ``{train,val,test}.csv`` (header ``filename,label``) with the JPEGs in ``images/``.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewnorm.data.registry import MINI_IMAGENET, check_split
from fewnorm.errors import DataError

if TYPE_CHECKING:
    import numpy as np

IMAGE_SIZE = 84
#: Ravi and Larochelle's split: classes per split, images per class.
EXPECTED_CLASSES: dict[str, int] = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600
#: Layouts in the order they are looked for.
LAYOUTS: tuple[str, ...] = ("pickle", "category", "csv")
#: File names per layout and split; any one of the alternatives will do.
LAYOUT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "pickle": {
        "train": ("mini-imagenet-cache-train.pkl",),
        "val": ("mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"),
        "test": ("mini-imagenet-cache-test.pkl",),
    },
    "category": {
        split: (f"miniImageNet_category_split_{part}.pickle",)
        for split, part in (("train", "train_phase_train"), ("val", "val"), ("test", "test"))
    },
    "csv": {split: (f"{split}.csv",) for split in ("train", "val", "test")},
}
#: The folder of JPEGs beside Ravi's CSVs.
CSV_IMAGES = "images"

Classes = list[tuple[str, list[int]]]  # (class name, row indices in the file's order), by name


@dataclass(frozen=True)
class MiniSource:
    """The file one split of miniImageNet is read from."""

    layout: str  # one of LAYOUTS
    split: str
    path: Path  # the pickle, or the CSV (its images are in path.parent / CSV_IMAGES)

    def identity(self) -> dict[str, Any]:
        """What a cache key records: the file's path, size and modification time.

        Hashing 0.81 GB would cost more than loading the cached store. For a CSV, its
        content hash and the ``images/`` folder's modification time stand for the images
        (the folder's time changes when files are added, removed or renamed).
        """
        st = self.path.stat()
        ident: dict[str, Any] = {
            "layout": self.layout,
            "path": str(self.path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        if self.layout == "csv":
            ident["sha256"] = hashlib.sha256(self.path.read_bytes()).hexdigest()
            ident["images_mtime_ns"] = (self.path.parent / CSV_IMAGES).stat().st_mtime_ns
        return ident


def mini_imagenet_dir(root: Path) -> Path:
    """The folder of the miniImageNet files under data root ``root``."""
    return root / MINI_IMAGENET


def locate_split(directory: Path, split: str) -> MiniSource | None:
    """The first layout (of :data:`LAYOUTS`) that has ``split`` in ``directory``, else ``None``."""
    check_split(split)
    for layout in LAYOUTS:
        for name in LAYOUT_FILES[layout][split]:
            if (directory / name).is_file():
                return MiniSource(layout, split, directory / name)
    return None


def require_split(directory: Path, split: str) -> MiniSource:
    """:func:`locate_split`, or a :class:`DataError` saying what is missing and what to do."""
    source = locate_split(directory, split)
    if source is None:
        wanted = "; ".join(
            f"{layout}: {' or '.join(LAYOUT_FILES[layout][split])}"
            + (f" with {CSV_IMAGES}/" if layout == "csv" else "")
            for layout in LAYOUTS
        )
        raise DataError(
            f"miniImageNet split '{split}' not found in {directory}: it needs one of ({wanted}). "
            f"See `fewnorm data download {MINI_IMAGENET}` for where to get them, or point "
            f"--data-root or $FEWNORM_DATA at a folder that holds {MINI_IMAGENET}/<file>."
        )
    if source.layout == "csv" and not (directory / CSV_IMAGES).is_dir():
        raise DataError(
            f"found {source.path.name} but no {CSV_IMAGES}/ folder of JPEGs beside it in "
            f"{directory}; extract the images there."
        )
    return source


def read_pickle(source: MiniSource) -> tuple[np.ndarray, Classes]:
    """The raw ``(N, H, W, 3)`` uint8 array of a pickle and its classes, sorted by name."""
    try:
        with source.path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1") if source.layout == "category" else pickle.load(f)
    except ModuleNotFoundError as exc:
        raise DataError(
            f"reading {source.path.name} needs the Python package '{exc.name}' (pip install {exc.name})."
        ) from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{source.path} is not a readable miniImageNet pickle ({type(exc).__name__}: {exc}); "
            f"delete it and get it again."
        ) from None
    key = "image_data" if source.layout == "pickle" else "data"
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{source.path} holds no '{key}' entry: not a {source.layout} miniImageNet file.")
    images = obj.pop(key)  # obj keeps no reference: the array is the split's only copy
    shape = getattr(images, "shape", None)
    if str(getattr(images, "dtype", "")) != "uint8" or shape is None or len(shape) != 4 or shape[3] != 3:
        raise DataError(
            f"images in {source.path} are {getattr(images, 'dtype', type(images).__name__)} "
            f"{shape}, expected uint8 (N, H, W, 3)."
        )
    if source.layout == "pickle":
        classes = _classes_from_dict(obj.get("class_dict"), source.path)
    else:
        classes = _classes_from_labels(obj.get("labels"), obj.get("catname2label"), source.path)
    rows = [i for _, idx in classes for i in idx]
    n = int(shape[0])
    if len(rows) != n or len(set(rows)) != n or not all(0 <= i < n for i in rows):
        raise DataError(
            f"the classes of {source.path} do not assign each of its {n} images to exactly "
            f"one class; the file is damaged or not miniImageNet."
        )
    return images, classes


def _classes_from_dict(class_dict: Any, path: Path) -> Classes:
    if not isinstance(class_dict, dict) or not class_dict:
        raise DataError(f"{path} has no 'class_dict' of class name -> row indices.")
    return sorted((str(name), [int(i) for i in rows]) for name, rows in class_dict.items())


def _classes_from_labels(labels: Any, names: Any, path: Path) -> Classes:
    if labels is None or len(labels) == 0:
        raise DataError(f"{path} has no 'labels' entry.")
    rows: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        rows.setdefault(int(label), []).append(i)
    if isinstance(names, dict):  # catname2label: class name -> label
        by_label = {int(label): str(name) for name, label in names.items()}
        if set(rows) <= set(by_label):
            return sorted((by_label[label], idx) for label, idx in rows.items())
    return [(str(label), rows[label]) for label in sorted(rows)]


def read_csv(source: MiniSource) -> list[tuple[str, list[str]]]:
    """Ravi's CSV as ``(class, [file names in row order])``, sorted by class."""
    try:
        with source.path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {source.path}: {exc}") from None
    if header is None or [h.strip() for h in header] != ["filename", "label"]:
        raise DataError(f"{source.path} must start with the header 'filename,label', got {header}.")
    classes: dict[str, list[str]] = {}
    for number, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise DataError(f"{source.path} line {number}: expected 'filename,label', got {row}.")
        classes.setdefault(row[1].strip(), []).append(row[0].strip())
    if not classes:
        raise DataError(f"{source.path} lists no images.")
    return sorted(classes.items())


@dataclass(frozen=True)
class SplitReport:
    """What ``fewnorm data verify mini-imagenet`` reports about one split."""

    split: str
    layout: str | None  # None when no layout has the split
    path: str | None
    images: int
    classes: int
    min_per_class: int
    max_per_class: int
    image_shape: list[int] | None  # (H, W, C); None when the images differ in size
    expected_classes: int
    expected_per_class: int
    ok: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def verify_split(directory: Path, split: str) -> SplitReport:
    """Count the images, classes and shapes of one split against 64/16/20 x 600 at 84x84x3."""
    expected = (EXPECTED_CLASSES[check_split(split)], IMAGES_PER_CLASS)
    try:
        source = require_split(directory, split)
        if source.layout == "csv":
            sizes, shapes = _csv_counts(source)
        else:
            array, classes = read_pickle(source)
            sizes, shapes = [len(rows) for _, rows in classes], {tuple(int(d) for d in array.shape[1:])}
            del array
    except DataError as exc:
        return SplitReport(split, None, None, 0, 0, 0, 0, None, *expected, False, str(exc))
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    problems = []
    if len(sizes) != expected[0]:
        problems.append(f"{len(sizes)} classes, expected {expected[0]}")
    if min(sizes) != expected[1] or max(sizes) != expected[1]:
        problems.append(f"{min(sizes)} to {max(sizes)} images per class, expected {expected[1]}")
    if shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        found = ", ".join("x".join(map(str, s)) for s in sorted(shapes)[:3])
        problems.append(f"images of {found}, expected {IMAGE_SIZE}x{IMAGE_SIZE}x3")
    problem = f"{source.path.name}: {'; '.join(problems)}." if problems else None
    return SplitReport(
        split, source.layout, str(source.path), sum(sizes), len(sizes), min(sizes), max(sizes),
        list(shape) if shape else None, *expected, problem is None, problem,
    )  # fmt: skip


def _csv_counts(source: MiniSource) -> tuple[list[int], set[tuple[int, ...]]]:
    """Images per class and the set of image shapes (headers only: nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    classes = read_csv(source)
    folder = source.path.parent / CSV_IMAGES
    shapes: set[tuple[int, ...]] = set()
    for _, names in classes:
        for name in names:
            try:
                with Image.open(folder / name) as im:
                    shapes.add((im.height, im.width, len(im.getbands())))
            except FileNotFoundError:
                raise DataError(f"{folder / name} (listed in {source.path.name}) is missing.") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image {folder / name}: {exc}") from None
    return [len(names) for _, names in classes], shapes


def howto(directory: Path) -> str:
    """Where to get miniImageNet and how to lay it out in ``directory`` (plain text)."""
    layouts = "\n".join(
        f"  {layout:<9} {', '.join(' or '.join(LAYOUT_FILES[layout][s]) for s in ('train', 'val', 'test'))}"
        + (f" and an {CSV_IMAGES}/ folder of 84x84 JPEGs" if layout == "csv" else "")
        for layout in LAYOUTS
    )
    return (
        f"miniImageNet has no stable public download (it is derived from ImageNet, whose terms\n"
        f"apply). Put the files of one of these layouts in {directory}:\n{layouts}\n"
        f"The pickles are what learn2learn's MiniImagenet(download=True) fetches (Zenodo record\n"
        f"7978538, with Dropbox and Google Drive fallbacks); the category pickles come with\n"
        f"MetaOptNet; Ravi and Larochelle's CSVs with their images folder. Teams hosting their own\n"
        f"copy: set $FEWNORM_MIRROR to its base URL and run this command again to fetch\n"
        f"{', '.join(LAYOUT_FILES['pickle'][s][0] for s in ('train', 'val', 'test'))} from there.\n"
        f"Then check them with `fewnorm data verify {MINI_IMAGENET}`."
    )
