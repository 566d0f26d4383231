"""Datasets as in-memory uint8 image stores: Omniglot and miniImageNet splits, files, cache.

``load_split("omniglot-minimal", "train")`` returns an :class:`ImageStore`; the first call
decodes and caches it, later calls read the cache. torch is imported on first use of
``load_split`` or ``ImageStore`` only, so the CLI's ``verify``, ``info`` and ``download``
(and anything importing :mod:`fewnorm.data.files`, ``root`` or ``registry``) stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewnorm.data.registry import (
    ALL_DATASETS,
    DATASETS,
    SPLITS,
    dataset_files,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)
from fewnorm.data.root import resolve_data_root
from fewnorm.data.spec import DatasetSpec

if TYPE_CHECKING:
    from fewnorm.data.store import ImageStore

__all__ = [
    "ALL_DATASETS",
    "DATASETS",
    "SPLITS",
    "DatasetSpec",
    "ImageStore",
    "dataset_files",
    "get_dataset_spec",
    "list_datasets",
    "load_split",
    "register_dataset",
    "resolve_data_root",
]


def load_split(dataset: str, split: str, root: Path | str | None = None, **options: Any) -> ImageStore:
    """The uint8 image store of one split of ``dataset``, from its registered loader.

    Omniglot datasets take the options of :func:`fewnorm.data.omniglot.load_split`
    (``image_size``, ``rotations``, ``split_file``, ``split_classes``, ``lake_fold``);
    ``mini-imagenet`` takes none (:func:`fewnorm.data.miniimagenet.load_split`); a plugin's
    dataset those its loader takes.
    """
    spec = get_dataset_spec(dataset)
    store: ImageStore = spec.load()(spec.name, split, root, **options)
    return store


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: the store pulls in torch.
    if name == "ImageStore":
        from fewnorm.data.store import ImageStore

        return ImageStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
