"""Cosine prototypes (Gidaris and Komodakis, CVPR 2018; Chen et al., ICLR 2019): the algorithm object.

A ProtoNet whose logits are a learned scale times the cosine similarity of each query to each
class mean, rather than negative squared distances. Pure step functions; the object is thin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.config import RunConfig
from fewnorm.episode import Episode, StepResult
from fewnorm.episodes.algorithms import build_embedding
from fewnorm.episodes.plan import RunPlan
from fewnorm.episodes.protonet import embed_episode, prototypes

#: Initial logit scale: cosines lie in [-1, 1], so softmax needs a temperature to be confident.
INITIAL_SCALE = 10.0


class ScaledEmbedding(nn.Module):
    """The backbone plus the learned log-scale of the cosine logits; ``forward`` is the backbone's."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.log_scale = nn.Parameter(torch.tensor(math.log(INITIAL_SCALE)))

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, D)
        out: Tensor = self.embedding(x)
        return out


def cosine_logits(model: ScaledEmbedding, episode: Episode) -> Tensor:
    """Scaled cosine similarity of each query to each prototype: (ways*queries, ways)."""
    z_support, z_query = embed_episode(model, episode)  # (ways*shots, D), (ways*queries, D)
    protos = prototypes(z_support, episode.support_labels, episode.ways)  # (ways, D)
    return model.log_scale.exp() * F.normalize(z_query, dim=1) @ F.normalize(protos, dim=1).T


def cosine_train_step(
    model: ScaledEmbedding, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
) -> StepResult:
    """One optimizer step on the mean query cross-entropy over ``episodes``."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses, accuracies = [], []
    for episode in episodes:
        logits = cosine_logits(model, episode)
        loss = F.cross_entropy(logits, episode.query_labels)
        (loss / len(episodes)).backward()
        losses.append(loss.item())
        accuracies.append((logits.argmax(1) == episode.query_labels).float().mean().item())
    optimizer.step()
    return StepResult(sum(losses) / len(losses), sum(accuracies) / len(accuracies))


@torch.no_grad()
def cosine_evaluate(model: ScaledEmbedding, episode: Episode) -> float:
    """Query accuracy of one episode in evaluation mode."""
    model.eval()
    logits = cosine_logits(model, episode)
    return float((logits.argmax(1) == episode.query_labels).float().mean())


class CosinePrototypes:
    """The algorithm object fewnorm's loop drives (the ``Algorithm`` protocol), made from the run plan."""

    name = "cosineproto"

    def __init__(self, plan: RunPlan) -> None:
        self.plan, self.config = plan, plan.config

    def build(self, config: RunConfig, in_channels: int) -> nn.Module:
        return ScaledEmbedding(build_embedding(self.plan, in_channels))  # the bound normalizer, the layout

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=config.lr)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        assert isinstance(model, ScaledEmbedding)
        return cosine_train_step(model, optimizer, episodes)

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        assert isinstance(model, ScaledEmbedding)
        return cosine_evaluate(model, episode)

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]

    def eval_chunk(self) -> int:
        return 1
