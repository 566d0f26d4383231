"""N-way K-shot Q-query episodes drawn from an in-memory uint8 store, one gather each."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fewnorm.data.store import ImageStore
from fewnorm.errors import ConfigError


@dataclass(frozen=True)
class Episode:
    """One task. Images are float in [0, 1]; labels are 0..ways-1, grouped by class."""

    support: Tensor  # (ways*shots, C, H, W)
    support_labels: Tensor  # (ways*shots,)
    query: Tensor  # (ways*queries, C, H, W)
    query_labels: Tensor  # (ways*queries,)
    ways: int
    shots: int
    queries: int

    def to(self, device: torch.device | str) -> Episode:
        return Episode(
            self.support.to(device, non_blocking=True),
            self.support_labels.to(device, non_blocking=True),
            self.query.to(device, non_blocking=True),
            self.query_labels.to(device, non_blocking=True),
            self.ways,
            self.shots,
            self.queries,
        )


class EpisodeSampler:
    """Draws episodes from ``store``; ``fixed(i)`` is episode ``i`` of a reproducible set.

    An episode is one ``randperm`` over classes, one ``argsort`` of random keys
    over each chosen class's images, and one gather of ``ways * (shots + queries)``
    uint8 images converted to float in one go: no per-image Python.
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

    def sample(self, generator: torch.Generator) -> Episode:
        """A random episode; the same generator state gives the same episode."""
        store, ways, k = self.store, self.ways, self.shots + self.queries
        classes = torch.randperm(store.num_classes, generator=generator)[:ways]  # (ways,)
        keys = torch.rand(ways, self._max_size, generator=generator)  # (ways, max_size)
        sizes = store.class_sizes[classes]  # (ways,)
        keys.masked_fill_(torch.arange(self._max_size) >= sizes[:, None], 2.0)  # past the class end
        picks = keys.argsort(dim=1)[:, :k]  # (ways, k): k distinct images per class
        rows = store.class_starts[classes][:, None] + picks  # (ways, k)
        images = store.images[rows.flatten()].float().div_(255.0)  # (ways*k, C, H, W)
        images = images.view(ways, k, *store.image_shape)
        support = images[:, : self.shots].reshape(ways * self.shots, *store.image_shape)
        query = images[:, self.shots :].reshape(ways * self.queries, *store.image_shape)
        labels = torch.arange(ways)
        return Episode(
            support,
            labels.repeat_interleave(self.shots),
            query,
            labels.repeat_interleave(self.queries),
            ways,
            self.shots,
            self.queries,
        )

    def fixed(self, index: int, base_seed: int) -> Episode:
        """Episode ``index`` of the fixed set: drawn from seed ``base_seed + index``."""
        return self.sample(torch.Generator().manual_seed(base_seed + index))
