"""Few-shot algorithms behind one interface, so the training loop only orchestrates.

An :class:`Algorithm` builds its model (backbone plus whatever head it needs),
makes its outer optimizer, takes one meta-training step on a meta-batch of
episodes, and scores one episode without changing the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from fewnorm.backbones import build_backbone
from fewnorm.config import RunConfig
from fewnorm.episodes.protonet import StepResult, protonet_evaluate, protonet_loss, protonet_train_step
from fewnorm.episodes.sampler import Episode
from fewnorm.names import normalize_name, unknown_name


class Algorithm(Protocol):
    name: str

    def build(self, config: RunConfig, in_channels: int) -> nn.Module: ...

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer: ...

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult: ...

    def evaluate(self, model: nn.Module, episode: Episode) -> float: ...


def build_embedding(config: RunConfig, in_channels: int) -> nn.Module:
    """The configured backbone with the configured normalizer."""
    return build_backbone(
        config.backbone,
        in_channels=in_channels,
        norm=config.norm,
        norm_options=config.norm_options,
        hidden=config.hidden,
    )


class ProtoNet:
    """Prototypical Networks: one episode per step, Adam on the embedding."""

    name = "protonet"

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        return build_embedding(config, in_channels)

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=config.lr)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        if len(episodes) == 1:
            return protonet_train_step(model, optimizer, episodes[0])
        model.train()  # a meta-batch: gradients averaged over its episodes, one optimizer step
        optimizer.zero_grad(set_to_none=True)
        losses, accuracies = [], []
        for episode in episodes:
            loss, accuracy = protonet_loss(model, episode)
            (loss / len(episodes)).backward()
            losses.append(loss.item())
            accuracies.append(accuracy.item())
        optimizer.step()
        return StepResult(sum(losses) / len(losses), sum(accuracies) / len(accuracies))

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        return protonet_evaluate(model, episode, one_at_a_time=self.config.query_one_at_a_time)


#: Algorithm name -> constructor taking the run configuration.
ALGORITHMS: dict[str, Callable[[RunConfig], Algorithm]] = {"protonet": ProtoNet}


def get_algorithm(config: RunConfig) -> Algorithm:
    for name, make in ALGORITHMS.items():
        if normalize_name(name) == normalize_name(config.algo):
            return make(config)
    raise unknown_name("algorithm", config.algo, ALGORITHMS)
