"""miniImageNet as a cached ``(N, 3, 84, 84)`` uint8 :class:`ImageStore`, from any layout.

100 ImageNet classes of 600 images, split 64/16/20 (Ravi and Larochelle, ICLR 2017). The
three layouts (learn2learn pickles, MetaOptNet category pickles, Ravi's CSVs with JPEGs)
are described and located in :mod:`fewnorm.data.minifiles`. Classes are sorted by name and
images kept in the file's order within a class, so the three layouts of the same data give
the same store. Any class counts load; ``fewnorm data verify mini-imagenet`` reports the
expected 64/16/20 classes of 600 images.

Memory: a pickle's ``(N, 84, 84, 3)`` array becomes the store's ``(N, 3, 84, 84)`` tensor
in its own memory, chunk by chunk, and is regrouped by class by following the permutation's
cycles with one image of scratch: no second full copy of the split ever exists (the
training split is 0.81 GB as uint8; the float32 copy some frameworks keep is 3.25 GB).
The latin1 decoding of a Python 2 (category) pickle is the exception: unpickling holds the
raw string and the array at once. CSV JPEGs decode straight into a preallocated tensor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fewnorm.data.minifiles import (
    CSV_IMAGES,
    IMAGE_SIZE,
    MiniSource,
    mini_imagenet_dir,
    read_csv,
    read_pickle,
    require_split,
)
from fewnorm.data.registry import MINI_IMAGENET, check_split
from fewnorm.data.root import CACHE_SUBDIR, ENV_CACHE, is_writable_dir, resolve_data_root, user_store_dir
from fewnorm.data.store import STORE_VERSION, ImageStore, load_or_build
from fewnorm.errors import DataError, OptionError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: Bump when decoding changes: it is part of every cache key.
PREPROCESS_VERSION = 1
_CHUNK = 256  # images per in-place permute chunk: 5.4 MB of scratch


def load_split(split: str, root: Path | str | None = None) -> ImageStore:
    """The ``(N, 3, 84, 84)`` uint8 store of one split, from the cache or built once.

    The split's layout is found in ``<root>/mini-imagenet/``; the store is cached in
    ``$FEWNORM_CACHE``, else ``<root>/mini-imagenet/.fewnorm-cache`` when writable, else
    the user's cache, under a key of the source file's path, size and modification time.
    """
    check_split(split)
    data_root = resolve_data_root(root)
    source = require_split(mini_imagenet_dir(data_root), split)
    spec = {
        "preprocess": PREPROCESS_VERSION,
        "store": STORE_VERSION,
        "split": split,
        "source": source.identity(),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cache_path = cache_dir(data_root) / f"{MINI_IMAGENET}-{split}-{IMAGE_SIZE}px-{key}.pt"
    return load_or_build(
        cache_path, lambda: build_store(source), f"{MINI_IMAGENET}/{split} ({source.layout} layout)"
    )


def load_dataset_split(
    dataset: str, split: str, root: Path | str | None = None, **options: Any
) -> ImageStore:
    """:func:`load_split` as the dataset registry calls loaders; miniImageNet takes no options."""
    if options:
        raise OptionError(f"{dataset} takes no load options, got {', '.join(options)}.")
    return load_split(split, root)


def cache_dir(root: Path) -> Path:
    """Where miniImageNet stores are cached: ``$FEWNORM_CACHE``, beside the files, or the user's."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    beside = mini_imagenet_dir(root) / CACHE_SUBDIR
    if is_writable_dir(beside) or (not beside.exists() and is_writable_dir(beside.parent)):
        return beside
    return user_store_dir()


def build_store(source: MiniSource) -> ImageStore:
    """Decode ``source`` into a store (no cache): pickles in place, CSV JPEGs one by one."""
    if source.layout == "csv":
        names, sizes_list, images = _decode_csv(source)
    else:
        array, classes = read_pickle(source)
        names = [name for name, _ in classes]
        sizes_list = [len(rows) for _, rows in classes]
        images = _to_chw_in_place(array)  # (N, 3, H, W), shares the array's memory
        del array
        _permute_rows_in_place(images, [i for _, rows in classes for i in rows])
    sizes = torch.tensor(sizes_list, dtype=torch.int64)  # (num_classes,)
    return ImageStore(images, torch.cumsum(sizes, 0) - sizes, sizes, names)


def _to_chw_in_place(array: np.ndarray) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 -> ``(N, C, H, W)`` in the same memory, one chunk at a time."""
    import numpy as np

    if not array.flags.c_contiguous or not array.flags.writeable:
        array = np.array(array, order="C")  # unusual pickles only: one transient copy
    n, h, w, c = array.shape
    hwc = torch.from_numpy(array)  # (N, H, W, C), shares memory
    flat = hwc.view(-1)
    per = h * w * c
    for i in range(0, n, _CHUNK):
        chunk = hwc[i : i + _CHUNK].permute(0, 3, 1, 2).contiguous()  # (n, C, H, W) scratch
        flat[i * per : i * per + chunk.numel()] = chunk.view(-1)  # rows after this chunk untouched
    return flat.view(n, c, h, w)


def _permute_rows_in_place(rows: torch.Tensor, order: Sequence[int]) -> None:
    """``rows[i] = old rows[order[i]]`` for every ``i``: each cycle with one row of scratch."""
    done = bytearray(len(order))
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        scratch = rows[start].clone()  # (C, H, W)
        j = start
        while True:
            done[j] = 1
            k = order[j]
            if k == start:
                rows[j] = scratch
                break
            rows[j] = rows[k]
            j = k


def _decode_csv(source: MiniSource) -> tuple[list[str], list[int], torch.Tensor]:
    """Decode the JPEGs of a CSV split into a preallocated ``(N, 3, 84, 84)`` uint8 tensor.

    An image that is not 84x84 is resized (PIL bilinear, which antialiases when shrinking).
    """
    from PIL import Image, UnidentifiedImageError

    classes = read_csv(source)
    folder = source.path.parent / CSV_IMAGES
    files = [name for _, names in classes for name in names]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} images listed in {source.path.name} are missing from {folder} "
            f"(first: {missing[0]}); extract the complete {CSV_IMAGES}/ folder there."
        )
    out = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)  # (N, 3, 84, 84)
    for row, name in enumerate(files):
        try:
            with Image.open(folder / name) as im:
                rgb = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot decode image {folder / name}: {exc}") from None
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        hwc = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)  # (84*84*3,)
        out[row] = hwc.view(IMAGE_SIZE, IMAGE_SIZE, 3).permute(2, 0, 1)
    return [c for c, _ in classes], [len(names) for _, names in classes], out
