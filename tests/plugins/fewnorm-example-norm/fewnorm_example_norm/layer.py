"""The example plugin's layer (imported only when the normalizer is built)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ExampleNorm(nn.Module):
    """Per-sample, per-channel centring and RMS scaling over (H, W), with a learnable gain."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W)
        centred = x - x.mean(dim=(2, 3), keepdim=True)
        scale = torch.rsqrt(centred.pow(2).mean(dim=(2, 3), keepdim=True) + self.eps)
        return centred * scale * self.gain[None, :, None, None]


def examplenorm(num_channels: int, /, eps: float = 1e-5) -> ExampleNorm:
    return ExampleNorm(num_channels, eps)
