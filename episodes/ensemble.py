"""Embedding wrappers for scoring ProtoNets: an ensemble of runs, and test-time augmentation.

Both wrap the embedding network and are scored like it (:func:`~fewnorm.episodes.lake.score_run`):

- :class:`EmbeddingEnsemble` concatenates its members' embeddings. A squared Euclidean
  distance over a concatenation is the sum of the members' squared distances, so its
  ProtoNet logits are exactly the sum of the members' logits: an ensemble by logit sum.
- :class:`AugmentedViews` averages the embedding of an image with those of ``views``
  fixed small affine distortions of it (:mod:`fewnorm.data.affine`), the same ``views``
  matrices for every image (drawn once from ``seed``), so scoring stays deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.data.affine import apply_matrices, random_matrices


class EmbeddingEnsemble(nn.Module):
    """Concatenated embeddings of several networks: ``(B, C, H, W) -> (B, sum D_m)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([member(x) for member in self.members], dim=1)  # (B, sum D_m)


class AugmentedViews(nn.Module):
    """Mean embedding of an image and ``views`` fixed small distortions of it: ``(B, ...) -> (B, D)``."""

    matrices: Tensor  # (views, 2, 3) buffer

    def __init__(self, model: nn.Module, views: int, seed: int = 0) -> None:
        super().__init__()
        self.model, self.views = model, views
        self.register_buffer(
            "matrices", random_matrices(views, torch.Generator().manual_seed(seed))
        )  # (V, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        total = self.model(x)  # (B, D)
        for theta in self.matrices:  # (2, 3) each
            total = total + self.model(apply_matrices(x, theta.expand(x.shape[0], 2, 3)))
        return total / (self.views + 1)  # (B, D)
