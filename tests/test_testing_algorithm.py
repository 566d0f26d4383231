"""``fewnorm.testing.check_algorithm``: every registered algorithm passes, each broken rule is caught."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewnorm.algorithms import ALGORITHM_REGISTRY, AlgorithmSpec, list_algorithms, register_algorithm
from fewnorm.config import RunConfig
from fewnorm.data import get_dataset_spec
from fewnorm.episode import Episode, StepResult
from fewnorm.episodes.plan import RunPlan
from fewnorm.testing import AlgorithmConformanceError, check_algorithm


@pytest.mark.parametrize("name", [s.name for s in list_algorithms()])
def test_every_registered_algorithm_conforms(name: str) -> None:
    check_algorithm(name)


class _Linear:
    """A linear classifier on flattened images: correct unless a subclass breaks one rule."""

    def __init__(self, plan: RunPlan) -> None:
        self.config = plan.config

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        c, h, w = get_dataset_spec(config.dataset).image_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, config.ways))

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        optimizer.zero_grad()
        logits = model(episodes[0].query)  # (ways*queries, ways)
        loss = F.cross_entropy(logits, episodes[0].query_labels)
        loss.backward()
        optimizer.step()
        return StepResult(loss.item(), float((logits.argmax(1) == episodes[0].query_labels).float().mean()))

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        with torch.no_grad():
            return float((model(episode.query).argmax(1) == episode.query_labels).float().mean())

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]

    def eval_chunk(self) -> int:
        return 1


class _NanLoss(_Linear):
    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        return StepResult(float("nan"), super().train_step(model, optimizer, episodes).accuracy)


class _NoUpdate(_Linear):
    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        return StepResult(1.0, 0.5)


class _EvaluateTrains(_Linear):
    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        self.train_step(model, self.optimizer(model, self.config), [episode])
        return super().evaluate(model, episode)


class _ManyDisagrees(_Linear):
    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [1.0 - a for a in super().evaluate_many(model, episodes)]


class _Unseeded(_Linear):
    generator = torch.Generator().manual_seed(0)  # never reseeded: each build differs

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        model = super().build(config, in_channels)
        with torch.no_grad():
            model[1].weight.add_(torch.rand(model[1].weight.shape, generator=self.generator))
        return model


@pytest.fixture
def register() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        ALGORITHM_REGISTRY.unregister(name)


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        (_NanLoss, r"\[train_step\] .* loss nan is not finite"),
        (_NoUpdate, r"\[train_step\] .* changed no parameter"),
        (_EvaluateTrains, r"\[evaluate\] .* evaluate changed"),
        (_ManyDisagrees, r"\[evaluate\] .* evaluate gave"),
        (_Unseeded, r"\[determinism\] .* two seeded builds and steps differ"),
    ],
)
def test_each_broken_rule_is_named(broken: type[_Linear], rule: str, register: list[str]) -> None:
    name = f"broken-{broken.__name__.strip('_').lower()}"
    register_algorithm(AlgorithmSpec(name=name, factory=broken, summary="", paper=""))
    register.append(name)
    with pytest.raises(AlgorithmConformanceError, match=rule):
        check_algorithm(name)


def test_the_correct_reference_passes(register: list[str]) -> None:
    register_algorithm(AlgorithmSpec(name="linear-reference", factory=_Linear, summary="", paper=""))
    register.append("linear-reference")
    check_algorithm("linear-reference")
