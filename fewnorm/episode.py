"""The types every layer shares: an episode, where episodes come from, a training step's result,
and the protocols of an algorithm and of what scores fixed episodes.

They live in the core so that core modules (augmentation, the process group) can speak of
episodes without importing the pipelines (:mod:`fewnorm.episodes`), which build on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from fewnorm.config import RunConfig


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


class EpisodeScorer(Protocol):
    """What scores fixed episodes without changing the model (an algorithm, or a fresh-head scorer)."""

    def evaluate(self, model: nn.Module, episode: Episode) -> float: ...

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]: ...

    def eval_chunk(self) -> int: ...


class Algorithm(Protocol):
    """A few-shot method, made by its registered factory from a run plan (``factory(plan)``).

    ``build`` and ``optimizer`` receive the plan's config; the normalizer comes bound from the
    plan (:func:`fewnorm.episodes.algorithms.build_embedding`), never by name.
    """

    name: str

    def build(self, config: RunConfig, in_channels: int) -> nn.Module: ...

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer: ...

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult: ...

    def evaluate(self, model: nn.Module, episode: Episode) -> float: ...

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]: ...

    def eval_chunk(self) -> int: ...
