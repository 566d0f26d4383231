"""N-way K-shot Q-query episodes drawn from an in-memory image store, one gather each.

:class:`~fewnorm.episode.Episode` lives in the core; it is re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fewnorm.data.store import ImageStore
from fewnorm.episode import Episode
from fewnorm.errors import ConfigError

#: Stores up to this size as float32 are converted once per sampler (omniglot-minimal: 27 MB)
#: rather than per episode: an episode is then one row gather, its cheapest form.
FLOAT_CACHE_BYTES = 512 * 2**20

__all__ = ["FLOAT_CACHE_BYTES", "Episode", "EpisodeSampler"]


class EpisodeSampler:
    """Draws episodes from ``store``; ``fixed(i)`` is episode ``i`` of a reproducible set.

    An episode is one ``randperm`` over classes, one ``argsort`` of random keys
    over each chosen class's images, and one ``index_select`` of ``ways * (shots +
    queries)`` rows, support rows first, so support and query are contiguous views
    of it: no per-image Python. Stores of at most ``FLOAT_CACHE_BYTES`` as float are
    converted to float once, here; larger ones convert each episode's rows in one
    kernel. The labels are the same two tensors in every episode of a sampler (they
    never change): do not modify them in place.
    """

    def __init__(self, store: ImageStore, ways: int, shots: int, queries: int, *, split: str = "") -> None:
        where = f" in the {split} split" if split else ""
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        if ways > store.num_classes:
            raise ConfigError(
                f"{ways}-way episodes need {ways} classes but there are {store.num_classes}{where}; "
                "lower --ways"
            )
        smallest = int(store.class_sizes.min())
        if shots + queries > smallest:
            raise ConfigError(
                f"shots + queries = {shots + queries} exceeds the {smallest} images of the smallest "
                f"class{where}; lower --shots or --queries"
            )
        self.store, self.ways, self.shots, self.queries = store, ways, shots, queries
        self._max_size = int(store.class_sizes.max())
        # Classes of one size (Omniglot, miniImageNet) need no mask past a class's end.
        self._uneven = smallest < self._max_size
        self._floats = float_images(store) if float_bytes(store) <= FLOAT_CACHE_BYTES else None
        self._floats_np = None if self._floats is None else self._floats.numpy()
        # Where each episode row sits in the (ways, max_size) matrix of sorted picks:
        # the support rows of every class, then the query rows, each grouped by class.
        picks = np.arange(ways)[:, None] * self._max_size + np.arange(shots + queries)  # (ways, k)
        self._order = np.concatenate([picks[:, :shots].ravel(), picks[:, shots:].ravel()])  # (ways*k,)
        self._starts, self._sizes = store.class_starts.numpy(), store.class_sizes.numpy()
        # Reused draw buffers (``out=``), read through numpy views: the same draws as fresh
        # tensors, without an allocation and a conversion each. One sampler per thread.
        self._perm = torch.empty(store.num_classes, dtype=torch.int64)
        self._keys = torch.empty(ways, self._max_size)
        self._perm_np, self._keys_np = self._perm.numpy(), self._keys.numpy()
        labels = torch.arange(ways)
        self._support_labels = labels.repeat_interleave(shots)  # (ways*shots,)
        self._query_labels = labels.repeat_interleave(queries)  # (ways*queries,)

    def sample(self, generator: torch.Generator) -> Episode:
        """A random episode; the same generator state gives the same episode."""
        store, ways = self.store, self.ways
        torch.randperm(store.num_classes, generator=generator, out=self._perm)
        classes = self._perm_np[:ways]  # (ways,)
        torch.rand(ways, self._max_size, generator=generator, out=self._keys)
        keys = self._keys_np  # (ways, max_size)
        if self._uneven:  # keys past a class's end sort last
            keys[np.arange(self._max_size) >= self._sizes[classes][:, None]] = 2.0
        # Index arithmetic on a few dozen integers is cheaper in numpy than as torch ops;
        # a stable sort makes tied keys (about one row in 10^5) order the same everywhere.
        rows = keys.argsort(axis=1, kind="stable")  # (ways, max_size)
        rows += self._starts[classes][:, None]
        rows = rows.ravel()[self._order]  # (ways*k,): support rows first
        n_support = ways * self.shots
        if self._floats_np is not None:
            # numpy's row gather and slices, wrapped as tensors: measured 1.4x faster per
            # episode than index_select and tensor slicing (no intra-op thread pool wake-up
            # for a copy of a few hundred kilobytes, no torch view bookkeeping).
            images = self._floats_np.take(rows, axis=0)  # (ways*k, C, H, W)
            support, query = torch.from_numpy(images[:n_support]), torch.from_numpy(images[n_support:])
        else:
            gathered = store.images.index_select(0, torch.from_numpy(rows))  # (ways*k, C, H, W) uint8
            support, query = torch.div(gathered, 255.0).split((n_support, len(rows) - n_support))
        return Episode(
            support, self._support_labels, query, self._query_labels, ways, self.shots, self.queries
        )

    def fixed(self, index: int, base_seed: int) -> Episode:
        """Episode ``index`` of the fixed set: drawn from seed ``base_seed + index``."""
        return self.sample(torch.Generator().manual_seed(base_seed + index))


def float_bytes(store: ImageStore) -> int:
    """Bytes of ``store``'s images as float32."""
    return 4 * store.images.numel()


def float_images(store: ImageStore) -> Tensor:
    """``store``'s images as float in [0, 1], converted exactly as an episode's rows would be."""
    return store.images.float().div_(255.0)  # (N, C, H, W)
