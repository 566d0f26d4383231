"""Classifier heads for gradient-based meta-learning: the model is ``embedding`` then ``head``.

MAML (Finn, Abbeel and Levine, ICML 2017) and ANIL (Raghu, Raghu, Bengio and
Vinyals, ICLR 2020) classify with a ``ways``-output layer on top of the
backbone's embedding. :class:`FewShotClassifier` keeps the two as the
submodules ``embedding`` and ``head``, so ANIL adapts exactly the parameters
whose names start with ``head.``.

Heads (``RunConfig.head``; ``None`` means :data:`DEFAULT_HEAD`):

- ``linear``: a linear layer with PyTorch's default (Kaiming-uniform) init.
  Finn's reference code draws the last layer from N(0, 1); learn2learn's CNN4
  uses a small truncated normal.
- ``linear-zero``: zero weights and bias, so every task starts from uniform
  predictions and the first inner step writes class directions into the head
  (the "zeroing trick" of Kao, Chu and Lee, "MAML is a Noisy Contrastive
  Learner in Classification", ICLR 2022; common in ANIL and MAML++ code). On
  omniglot-minimal 5-way 1-shot it learned more slowly than ``linear`` (68% vs
  81% test accuracy after 1000 training tasks, Adam 3e-3, meta-batch 4), hence
  not the default.
- ``affine-divergence``: :class:`~fewnorm.norms.affine_divergence.AffineDivergenceLinear`
  (Bird, arXiv 2512.22247), ``(W z + b) / sqrt(||z||^2 + 1)``, its own init.

Scoring other ways than the trained ones (and Lake's 20-way runs) gives each task a fresh
head instead, zero- or prototype-initialised: :mod:`fewnorm.episodes.reinit`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.data.registry import get_dataset_spec
from fewnorm.errors import ConfigError
from fewnorm.names import normalize_name, unknown_name
from fewnorm.norms import norm_phase, task_scope
from fewnorm.norms.affine_divergence import AffineDivergenceLinear

HEADS = ("linear", "linear-zero", "affine-divergence")
DEFAULT_HEAD = "linear"
_ALIASES = {"zero": "linear-zero", "ad": "affine-divergence"}


class FewShotClassifier(nn.Module):
    """``head(embedding(x))``: ``(N, C, H, W) -> (N, D) -> (N, ways)``."""

    def __init__(self, embedding: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.head = head

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, ways)
        out: Tensor = self.head(self.embedding(x))
        return out


def canonical_head(name: str | None) -> str:
    """The canonical head name for ``name`` (``None``: the default); unknown names list the known."""
    if name is None:
        return DEFAULT_HEAD
    key = normalize_name(name)
    for known in HEADS:
        if normalize_name(known) == key:
            return known
    if key in _ALIASES:
        return _ALIASES[key]
    raise unknown_name("head", name, HEADS)


def build_head(name: str | None, in_features: int, ways: int) -> nn.Module:
    """The head ``name`` mapping ``(N, in_features)`` to ``(N, ways)`` logits."""
    head = canonical_head(name)
    if head == "affine-divergence":
        return AffineDivergenceLinear(in_features, ways)
    layer = nn.Linear(in_features, ways)
    if head == "linear-zero":
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


def image_size(dataset: str) -> int:
    """The side length of the images of ``dataset``, from its spec (the head's input size depends on it)."""
    return get_dataset_spec(dataset).image_size


def embedding_dim(embedding: nn.Module, in_channels: int, size: int) -> int:
    """Width ``D`` of ``embedding``'s output for ``size x size`` images, by one probing forward.

    The probe runs in evaluation mode under ``no_grad`` on zeros (no random numbers
    drawn, no buffer moved), so building a model stays reproducible.
    """
    was_training = embedding.training
    embedding.eval()
    try:
        with torch.no_grad(), task_scope(), norm_phase("support"):
            probe = next(embedding.parameters(), torch.zeros(()))
            x = torch.zeros(2, in_channels, size, size, dtype=probe.dtype)  # (2, C, H, W)
            out = embedding(x)  # (2, D)
    finally:
        embedding.train(was_training)
    if out.dim() != 2:
        raise ConfigError(f"the embedding must return (N, D) features, got shape {tuple(out.shape)}")
    return int(out.shape[1])


def build_classifier(
    embedding: nn.Module, *, in_channels: int, size: int, ways: int, head: str | None
) -> FewShotClassifier:
    """``embedding`` with a ``ways``-output ``head`` sized for ``size x size`` images."""
    return FewShotClassifier(embedding, build_head(head, embedding_dim(embedding, in_channels, size), ways))
