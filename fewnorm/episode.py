"""The types every layer shares: an episode, where episodes come from, a training step's result.

They live in the core so that core modules (augmentation, the process group) can speak of
episodes without importing the pipelines (:mod:`fewnorm.episodes`), which build on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Episode:
    """One task. Images are float in [0, 1]; labels are 0..ways-1, grouped by class.

    A sampler hands every episode the same two label tensors: treat them as read-only.
    """

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


class EpisodeSource(Protocol):
    """What draws episodes: random training ones from a generator, fixed ones by index and seed."""

    def sample(self, generator: torch.Generator) -> Episode: ...

    def fixed(self, index: int, base_seed: int) -> Episode: ...


@dataclass(frozen=True)
class StepResult:
    """A training step's mean loss and accuracy over its episodes."""

    loss: float
    accuracy: float
