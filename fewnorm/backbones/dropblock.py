"""DropBlock: structured dropout of contiguous squares of a feature map.

Ghiasi, Lin and Le, "DropBlock: A regularization method for convolutional networks",
NeurIPS 2018; used in the last two ResNet-12 blocks by MetaOptNet (Lee et al., CVPR 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError


class DropBlock2d(nn.Module):
    """Zero ``block_size`` x ``block_size`` squares so that about ``drop_prob`` of units drop.

    Block centres are drawn per sample and channel with rate ``gamma`` (the paper's
    formula, so that the expected dropped fraction is ``drop_prob``), only where a whole
    block fits; kept units are rescaled by ``numel / kept``. Identity in evaluation mode or
    with ``drop_prob == 0``. The mask is drawn from torch's global generator without
    gradient; the output is ``x * mask * scale`` (twice differentiable, nothing in place).
    The block shrinks to the feature map when the map is smaller than ``block_size``.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 5) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise OptionError(f"dropblock probability must be in [0, 1), got {drop_prob}")
        if block_size < 1:
            raise OptionError(f"dropblock block size must be a positive integer, got {block_size}")
        self.drop_prob, self.block_size = float(drop_prob), int(block_size)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        if not self.training or self.drop_prob == 0.0:
            return x
        n, c, h, w = x.shape
        size = min(self.block_size, h, w)
        valid = (h - size + 1) * (w - size + 1)
        gamma = self.drop_prob / size**2 * (h * w) / valid
        with torch.no_grad():
            shape = (n, c, h - size + 1, w - size + 1)  # top-left corners where a block fits
            seeds = (torch.rand(shape, device=x.device) < gamma).to(x.dtype)
            pad = size - 1
            # A unit drops when a seed lies within size - 1 above and left of it.
            block = F.max_pool2d(F.pad(seeds, (pad, pad, pad, pad)), size, stride=1)  # (N, C, H, W)
            keep = 1.0 - block
            scale = keep.numel() / keep.sum().clamp_min(1.0)
        return x * keep * scale

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"
