"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017): pure step functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.episode import Episode, StepResult
from fewnorm.norms import norm_phase, task_scope

__all__ = ["StepResult", "protonet_evaluate", "protonet_loss", "protonet_train_step", "prototypes"]


def prototypes(z_support: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means of the support embeddings: (ways*shots, D) -> (ways, D)."""
    sums = z_support.new_zeros(ways, z_support.shape[1]).index_add(0, labels, z_support)
    counts = torch.bincount(labels, minlength=ways).clamp_min(1).to(z_support.dtype)
    return sums / counts[:, None]


def squared_distances(z_query: Tensor, protos: Tensor) -> Tensor:
    """Squared Euclidean distances: (Q, D), (ways, D) -> (Q, ways)."""
    return (z_query[:, None, :] - protos[None, :, :]).pow(2).sum(-1)


def embed_episode(
    model: nn.Module, episode: Episode, *, one_at_a_time: bool = False
) -> tuple[Tensor, Tensor]:
    """Support then query embeddings, each pass under its phase, in one task scope.

    ``one_at_a_time`` passes each query image alone, which exposes normalizers
    that are transductive (whose query outputs depend on the other queries).
    """
    with task_scope():
        with norm_phase("support"):
            z_support = model(episode.support)  # (ways*shots, D)
        with norm_phase("query"):
            if one_at_a_time:
                z_query = torch.cat([model(q[None]) for q in episode.query])  # (ways*queries, D)
            else:
                z_query = model(episode.query)  # (ways*queries, D)
    return z_support, z_query


def protonet_logits(model: nn.Module, episode: Episode, *, one_at_a_time: bool = False) -> Tensor:
    """Negative squared distances of each query to each prototype: (ways*queries, ways)."""
    z_support, z_query = embed_episode(model, episode, one_at_a_time=one_at_a_time)
    return -squared_distances(z_query, prototypes(z_support, episode.support_labels, episode.ways))


def protonet_loss(model: nn.Module, episode: Episode) -> tuple[Tensor, Tensor]:
    """Cross-entropy over the query set and the query accuracy (a 0-d tensor)."""
    logits = protonet_logits(model, episode)
    loss = F.cross_entropy(logits, episode.query_labels)
    accuracy = (logits.argmax(1) == episode.query_labels).float().mean()
    return loss, accuracy


def protonet_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, episode: Episode) -> StepResult:
    """One episode of meta-training: forward, backward, optimizer step."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, accuracy = protonet_loss(model, episode)
    loss.backward()
    optimizer.step()
    return StepResult(loss.item(), accuracy.item())


@torch.no_grad()
def protonet_evaluate(model: nn.Module, episode: Episode, *, one_at_a_time: bool = False) -> float:
    """Query accuracy of one episode in evaluation mode."""
    model.eval()
    logits = protonet_logits(model, episode, one_at_a_time=one_at_a_time)
    return float((logits.argmax(1) == episode.query_labels).float().mean())
