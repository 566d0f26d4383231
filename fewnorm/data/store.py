"""The in-memory image store: one contiguous uint8 tensor per split plus a class index table."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fewnorm.errors import DataError
from fewnorm.filemode import apply_umask

log = logging.getLogger(__name__)

#: Tag and version written into every saved store; a reader refuses anything else.
STORE_FORMAT = "fewnorm.ImageStore"
STORE_VERSION = 1


@dataclass
class ImageStore:
    """All images of one split, grouped by class, ready for index gathers.

    ``images[class_starts[c] : class_starts[c] + class_sizes[c]]`` are the images of class
    ``c``, named ``class_names[c]``. Episodes gather rows from ``images`` and convert the
    whole episode to float at once; nothing here is per image.
    """

    images: torch.Tensor  # (N, C, H, W) uint8, contiguous
    class_starts: torch.Tensor  # (num_classes,) int64: first row of each class
    class_sizes: torch.Tensor  # (num_classes,) int64: rows of each class
    class_names: list[str]

    def __post_init__(self) -> None:
        # Cheap checks on the small index tensors only; the images are never scanned.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a (N, C, H, W) uint8 tensor, got {tuple(self.images.shape)} "
                f"{self.images.dtype}"
            )
        self.images = self.images.contiguous()
        n = len(self.class_names)
        for label, t in (("class_starts", self.class_starts), ("class_sizes", self.class_sizes)):
            if t.dtype != torch.int64 or t.shape != (n,):
                raise ValueError(
                    f"{label} must be a ({n},) int64 tensor (one per class name), got "
                    f"{tuple(t.shape)} {t.dtype}"
                )
        ends = self.class_starts + self.class_sizes
        if n and (
            bool((self.class_starts < 0).any())
            or bool((self.class_sizes < 0).any())
            or int(ends.max()) > self.images.shape[0]
        ):
            raise ValueError("class_starts/class_sizes point outside images")

    @property
    def num_classes(self) -> int:
        """Number of classes (rotated copies count as classes of their own)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_images(self, index: int) -> torch.Tensor:
        """The ``(class_sizes[index], C, H, W)`` view of the images of class ``index``."""
        start = int(self.class_starts[index])
        return self.images[start : start + int(self.class_sizes[index])]

    def save(self, path: Path) -> None:
        """Write the store to ``path`` atomically.

        The data goes to a temporary file in the same folder, is fsynced, then renamed over
        ``path``: a crash leaves the previous file (or none), never a partial one.
        """
        path = Path(path)
        payload: dict[str, Any] = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "images": self.images,
            "class_starts": self.class_starts,
            "class_sizes": self.class_sizes,
            "class_names": list(self.class_names),
        }
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                apply_umask(f.fileno())  # mkstemp makes it owner-only; the user's umask decides
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> ImageStore:
        """Read a store written by :meth:`save` (``torch.load(weights_only=True)``, on CPU)."""
        path = Path(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(f"no image store at {path}.") from None
        except Exception as exc:  # torch raises several types for a damaged file
            raise DataError(
                f"image store {path} is unreadable ({type(exc).__name__}); delete it "
                f"(a cached store is rebuilt from the zips on the next load)."
            ) from None
        if not isinstance(obj, dict) or obj.get("format") != STORE_FORMAT:
            raise DataError(f"{path} is not a fewnorm image store; delete it.")
        if obj.get("version") != STORE_VERSION:
            raise DataError(
                f"image store {path} has format version {obj.get('version')}, this fewnorm "
                f"reads {STORE_VERSION}; delete it so it is rebuilt."
            )
        try:
            return cls(obj["images"], obj["class_starts"], obj["class_sizes"], list(obj["class_names"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"image store {path} is inconsistent ({exc}); delete it.") from None

    @classmethod
    def from_classes(cls, per_class: list[torch.Tensor], names: list[str]) -> ImageStore:
        """Concatenate per-class ``(n_c, C, H, W)`` uint8 tensors into one store."""
        if len(per_class) != len(names):
            raise ValueError(f"{len(per_class)} image tensors but {len(names)} class names")
        if not per_class:
            raise ValueError("an image store needs at least one class")
        shapes = {tuple(t.shape[1:]) for t in per_class}
        if len(shapes) != 1 or any(t.dim() != 4 for t in per_class):
            raise ValueError(f"every class needs (n, C, H, W) images of one shape, got {shapes}")
        sizes = torch.tensor([t.shape[0] for t in per_class], dtype=torch.int64)
        starts = torch.cumsum(sizes, 0) - sizes  # exclusive prefix sum
        return cls(torch.cat(per_class).contiguous(), starts, sizes, list(names))


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_or_build(cache_path: Path, build: Callable[[], ImageStore], label: str) -> ImageStore:
    """The store cached at ``cache_path``, else ``build()`` it and cache it (atomically).

    An unreadable cache is rebuilt; a cache that cannot be written only costs time
    on the next run, so it is logged and the built store is returned.
    """
    if cache_path.is_file():
        try:
            store = ImageStore.load(cache_path)
            log.debug("loaded cached store %s", cache_path)
            return store
        except DataError as exc:
            log.warning("rebuilding unreadable cached store: %s", exc)
    start = time.perf_counter()
    store = build()
    log.info("built %s (%d classes) in %.2f s", label, store.num_classes, time.perf_counter() - start)
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        store.save(cache_path)
    except OSError as exc:
        log.warning("could not cache the store at %s: %s", cache_path, exc)
    return store
