"""Datasets as in-memory uint8 image stores: Omniglot splits, files, download, cache.

``load_split("omniglot-minimal", "train")`` returns an :class:`ImageStore`; the first call
decodes and caches it, later calls read the cache. torch is imported on first use of
``load_split`` or ``ImageStore`` only, so the CLI's ``verify``, ``info`` and ``download``
(and anything importing :mod:`fewnorm.data.files`, ``root`` or ``registry``) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewnorm.data.registry import DATASETS, SPLITS, dataset_files
from fewnorm.data.root import resolve_data_root

if TYPE_CHECKING:
    from fewnorm.data.omniglot import load_split
    from fewnorm.data.store import ImageStore

__all__ = ["DATASETS", "SPLITS", "ImageStore", "dataset_files", "load_split", "resolve_data_root"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: these two pull in torch.
    if name == "load_split":
        from fewnorm.data.omniglot import load_split

        return load_split
    if name == "ImageStore":
        from fewnorm.data.store import ImageStore

        return ImageStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
