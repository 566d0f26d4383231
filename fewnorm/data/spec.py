"""A dataset as a registry spec: what the configuration, the pipelines and ``fewnorm data`` need to know.

A :class:`DatasetSpec` holds a dataset's metadata without importing its loader (no
torch): its image shape, where its files live and which splits read which of them, how to
download it, and what it supports. Its ``loader`` (``"module:attribute"``, imported on
first use) is called as ``loader(name, split, root, **options)`` and returns the split's
:class:`~fewnorm.data.store.ImageStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fewnorm.registry import load_object

#: How a dataset's images arrive: fixed zips checked by checksum (``fewnorm data verify``
#: lists them), one of several file layouts found in its folder, or drawn by code (no files).
STORAGES = ("zips", "layouts", "generated")
#: What a dataset may support: Lake's one-shot runs may score a model trained on it; lake-style
#: folds (and turning training rotations off) are defined on it; its classes come from split
#: files (``--split-file``).
CAPABILITIES = ("lake20", "lake-style", "split-file")


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset."""

    name: str
    loader: Callable[..., Any] | str = field(repr=False, compare=False)
    summary: str
    paper: str
    image_shape: tuple[int, int, int]  # (C, H, W) of every image the loader returns
    storage: str = "generated"
    folder: str | None = None  # under the data root, where its files are
    split_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # zips: split -> files
    download_subset: str | None = None  # the subset `fewnorm data download NAME` fetches
    download_hint: str = ""  # how to get its files, where no download exists
    supports: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source: str = "fewnorm"

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"{self.name}: storage must be one of {STORAGES}, got '{self.storage}'")
        unknown = set(self.supports) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(unknown)}; use {CAPABILITIES}")
        shape = self.image_shape
        if len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"{self.name}: image_shape must be (channels, height, width), got {shape}")
        if shape[1] != shape[2]:  # heads are sized by probing a square image
            raise ValueError(f"{self.name}: images must be square, got {shape[1]}x{shape[2]}")
        if self.storage == "zips" and not self.split_files:
            raise ValueError(f"{self.name}: a dataset stored as zips names its files per split")
        object.__setattr__(self, "split_files", MappingProxyType(dict(self.split_files)))

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def image_size(self) -> int:
        """The side length of its (square) images: what a head's input size is probed with."""
        return self.image_shape[1]

    def files(self) -> list[str]:
        """Every file its splits read, in split order, each once."""
        return list(dict.fromkeys(name for names in self.split_files.values() for name in names))

    def load(self) -> Callable[..., Any]:
        """The split loader, imported on first use if it was given as ``"module:attribute"``."""
        return load_object(self.loader)
