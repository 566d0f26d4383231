"""Standard few-shot training augmentation, batched over a whole episode.

Random crop with zero padding, colour jitter (brightness, contrast, saturation) and
horizontal flip, as in the miniImageNet training of MetaOptNet and its successors
(``RandomCrop(84, padding=8)``, ``ColorJitter(0.4, 0.4, 0.4)``, ``RandomHorizontalFlip``).
Every random number comes from the caller's ``torch.Generator``, all drawn up front, and
the transform is a handful of tensor operations over the whole ``(N, C, H, W)`` batch: no
per-image Python, no PIL. Crop and flip are one gather; the jitters follow torchvision's
formulas but in a fixed order (brightness, contrast, saturation) rather than a random one.
Saturation is skipped for single-channel images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from fewnorm.episode import Episode

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale``.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """Parameters of :func:`augment_images` (the defaults are the standard ones).

    ``padding`` is in pixels; ``None`` scales 8 pixels at 84x84 to the image size (3 at
    28x28). Jitter factors are drawn uniformly from ``[1 - x, 1 + x]``.
    """

    padding: int | None = None
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    flip: float = 0.5  # probability of a horizontal flip

    def pad_for(self, height: int) -> int:
        """The crop padding for images of ``height`` pixels."""
        return self.padding if self.padding is not None else max(1, round(8 * height / 84))


STANDARD = Augmentation()


def augment_images(images: Tensor, generator: torch.Generator, spec: Augmentation = STANDARD) -> Tensor:
    """Augment a float batch ``(N, C, H, W)`` in ``[0, 1]``; returns a new tensor of that shape."""
    n, c, h, w = images.shape
    pad = spec.pad_for(h)
    # Every draw up front, in a fixed order, from the caller's generator (on the CPU).
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)  # (2, N): dy, dx
    flips = torch.rand(n, generator=generator) < spec.flip  # (N,)
    spread = torch.tensor([spec.brightness, spec.contrast, spec.saturation])
    factors = 1.0 + (2.0 * torch.rand(3, n, generator=generator) - 1.0) * spread[:, None]  # (3, N)
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    factors = factors.to(images.device, images.dtype)

    # Crop and flip: one gather from the zero-padded batch.
    padded = F.pad(images, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = torch.arange(w, device=images.device).expand(n, w)  # (N, W)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[1][:, None]  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]  # (N, 1, 1)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, H, W)

    b, k, s = (f.view(n, 1, 1, 1) for f in factors)  # each (N, 1, 1, 1)
    out = (out * b).clamp(0.0, 1.0)  # brightness: blend with black
    mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    out = (k * out + (1.0 - k) * mean).clamp(0.0, 1.0)  # contrast: blend with the mean grey
    if c == 3:
        out = (s * out + (1.0 - s) * _gray(out)).clamp(0.0, 1.0)  # saturation: blend with grey
    return out.contiguous()


def _gray(images: Tensor) -> Tensor:
    """Luma ``(N, 1, H, W)`` of RGB images, or the images themselves when single-channel."""
    if images.shape[1] != 3:
        return images.mean(dim=1, keepdim=True)
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device)
    return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def augment_episode(episode: Episode, generator: torch.Generator, spec: Augmentation = STANDARD) -> Episode:
    """The episode with support and query augmented together, in one batched transform."""
    both = torch.cat([episode.support, episode.query])  # (S + Q, C, H, W)
    out = augment_images(both, generator, spec)
    split = episode.support.shape[0]
    return dataclasses.replace(episode, support=out[:split], query=out[split:])
