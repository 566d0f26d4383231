"""RMSNorm over channels.

Zhang and Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
LayerNorm without re-centering: per sample and spatial position, each
activation is divided by the root mean square of the ``C`` channel values
there, then scaled by a learned per-channel gain::

    rms = sqrt(mean_C(x^2) + eps)        # (N, 1, H, W)
    y   = g * x / rms

No batch statistics, no buffers, no bias; invariant to rescaling the input
(up to ``eps``). ``eps`` sits inside the root so that the gradient stays
finite at ``x = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError


class RMSNorm2d(nn.Module):
    """Divide by the RMS over channels at each position, then a per-channel gain."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        if eps <= 0:
            raise OptionError(f"rmsnorm eps must be positive, got {eps}")
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))  # gain g (C,)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        inv_rms = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)  # (N, 1, H, W)
        return x * inv_rms * self.weight[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def rmsnorm(num_channels: int, /, eps: float = 1e-6) -> RMSNorm2d:
    """Factory for :class:`RMSNorm2d`."""
    return RMSNorm2d(num_channels, eps=eps)
