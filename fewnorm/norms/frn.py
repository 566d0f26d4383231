"""Filter Response Normalization with a Thresholded Linear Unit (FRN + TLU).

Singh and Krishnan, "Filter Response Normalization Layer: Eliminating Batch
Dependence in the Training of Deep Neural Networks", CVPR 2020. Studied in
Lubana, Dick and Tanaka, "Beyond BatchNorm", NeurIPS 2021.

Per sample and channel, with ``nu2`` the mean square over ``(H, W)`` (no centering)::

    y = gamma * x / sqrt(nu2 + |eps|) + beta
    z = max(y, tau)

FRN replaces both the normalization and the activation (a ``norm-act``). It
uses no batch statistics and no buffers, so training and evaluation agree and
a single image is normalized on its own. With ``learnable_eps`` the epsilon is
a parameter initialized to ``eps`` and used through its absolute value, as in
the paper (which learns it for small activation maps).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError


class FilterResponseNorm2d(nn.Module):
    """FRN over ``(H, W)`` per sample and channel, followed by ``max(y, tau)``."""

    def __init__(self, num_channels: int, eps: float = 1e-6, learnable_eps: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise OptionError(f"frn eps must be positive, got {eps}")
        self.num_channels, self.eps, self.learnable_eps = num_channels, eps, learnable_eps
        self.weight = nn.Parameter(torch.ones(num_channels))  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # beta (C,)
        self.tau = nn.Parameter(torch.zeros(num_channels))  # TLU threshold (C,)
        self.eps_param = nn.Parameter(torch.tensor(float(eps))) if learnable_eps else None

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        eps = self.eps if self.eps_param is None else self.eps_param.abs()
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        y = x * torch.rsqrt(nu2 + eps)  # (N, C, H, W)
        y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return torch.maximum(y, self.tau[None, :, None, None])

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, learnable_eps={self.learnable_eps}"


def frn(num_channels: int, /, eps: float = 1e-6, learnable_eps: bool = True) -> FilterResponseNorm2d:
    """Factory for :class:`FilterResponseNorm2d` (FRN followed by TLU)."""
    return FilterResponseNorm2d(num_channels, eps=eps, learnable_eps=learnable_eps)
