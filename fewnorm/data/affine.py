"""Small random affine distortions of character images, batched (Koch et al. 2015; Lake et al.).

Koch, Zemel and Salakhutdinov ("Siamese neural networks for one-shot image recognition",
2015) trained on Omniglot with random affine distortions: rotation within +-10 degrees,
shear within +-0.3, scale within [0.8, 1.2] per axis and translation within +-2 pixels
(at 105x105). :data:`SMALL` keeps those ranges, translation scaled to the image size. Every
random number comes from the caller's generator, drawn up front; one ``affine_grid`` and
one ``grid_sample`` transform the whole ``(N, C, H, W)`` batch (zeros, the background,
fill what moves in).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from fewnorm.episode import Episode


@dataclass(frozen=True)
class AffineRanges:
    """Uniform ranges of the distortion: ``[-x, x]`` for each, scale ``[1 - x, 1 + x]``."""

    degrees: float = 10.0
    shear: float = 0.3
    scale: float = 0.2
    translate: float = 2.0 / 105.0  # fraction of the image side (2 pixels at 105)


SMALL = AffineRanges()


def random_matrices(n: int, generator: torch.Generator, spec: AffineRanges = SMALL) -> Tensor:
    """``(n, 2, 3)`` affine matrices in ``affine_grid``'s normalized coordinates."""
    u = 2.0 * torch.rand(7, n, generator=generator) - 1.0  # (7, n) in [-1, 1]
    angle = u[0] * math.radians(spec.degrees)
    shear_x, shear_y = u[1] * spec.shear, u[2] * spec.shear
    scale_x, scale_y = 1.0 + u[3] * spec.scale, 1.0 + u[4] * spec.scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    shear = torch.stack(
        [torch.stack([torch.ones(n), shear_x], -1), torch.stack([shear_y, torch.ones(n)], -1)], -2
    )  # (n, 2, 2)
    scale = torch.diag_embed(torch.stack([scale_x, scale_y], -1))  # (n, 2, 2)
    linear = rotation @ shear @ scale  # (n, 2, 2)
    shift = torch.stack([u[5], u[6]], -1) * (2.0 * spec.translate)  # (n, 2): normalized units
    return torch.cat([linear, shift[:, :, None]], dim=2)  # (n, 2, 3)


def apply_matrices(images: Tensor, matrices: Tensor) -> Tensor:
    """Warp a float batch ``(N, C, H, W)`` by per-image ``(N, 2, 3)`` matrices (bilinear, zero fill)."""
    theta = matrices.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_images(images: Tensor, generator: torch.Generator, spec: AffineRanges = SMALL) -> Tensor:
    """Each image of a float batch ``(N, C, H, W)`` under its own random small distortion."""
    return apply_matrices(images, random_matrices(images.shape[0], generator, spec))


def affine_episode(episode: Episode, generator: torch.Generator, spec: AffineRanges = SMALL) -> Episode:
    """The episode with every support and query image distorted, in one batched transform."""
    both = torch.cat([episode.support, episode.query])  # (S + Q, C, H, W)
    out = affine_images(both, generator, spec)
    split = episode.support.shape[0]
    return dataclasses.replace(episode, support=out[:split], query=out[split:])
