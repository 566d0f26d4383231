"""Scaled Weight Standardization: a convolution whose filters are standardized, then scaled.

Brock, De and Smith, "Characterizing Signal Propagation to Close the Performance
Gap in Unnormalized ResNets", ICLR 2021 (Scaled WS, as used in NF-ResNets);
after Qiao, Wang, Liu, Shen and Yuille, "Micro-Batch Training with Batch-Channel
Normalization and Weight Standardization" (Weight Standardization), 2019; studied
in Lubana, Dick and Tanaka, "Beyond BatchNorm", NeurIPS 2021.

Each output filter ``W[o]`` (``fan_in = C_in * k * k`` entries) is standardized
over its own entries and scaled::

    W_eff[o] = gamma * gain[o] * (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps) / sqrt(fan_in)

so ``W_eff[o]`` has zero mean and norm ``gamma * gain[o]`` (up to eps), and the
output is invariant to ``W[o] -> a * W[o] + c`` for ``a > 0``.

The choice of ``gamma``: a zero-mean filter cancels the (common) mean of its
inputs, so only their variance propagates, ``Var(out) = ||W_eff||^2 Var(in)``.
After a ReLU of a unit Gaussian, ``Var(relu(z)) = (1 - 1/pi) / 2``, hence the
default ``gamma = sqrt(2 / (1 - 1/pi)) ~ 1.7129`` (NF-Nets' ReLU gamma; they
tabulate the Monte-Carlo estimate 1.714) keeps unit variance through ReLU then
conv. He's ``sqrt(2)`` compensates the second moment of ``relu(z)`` instead,
whose mean part a centred filter does not pass on. ``gamma = 1`` gives plain Scaled WS.
The raw weight starts as a unit Gaussian so that ``var(W[o]) ~ 1 >> eps``: the
standardization then makes the effective weight independent of that init scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.weightnorm import NormConv2d

#: The NF-Nets gamma for ReLU: ``1 / std(relu(z))`` for ``z ~ N(0, 1)``.
RELU_GAMMA = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))


class ScaledWSConv2d(NormConv2d):
    """Conv2d with per-filter standardized weights scaled by ``gamma * gain / sqrt(fan_in)``.

    The registered factory of ``scaled-ws``: ``num_channels`` output filters, the conv
    geometry as keywords; ``gamma=1`` drops the ReLU gain.
    """

    def __init__(
        self,
        num_channels: int,
        /,
        in_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        eps: float = 1e-4,
        gamma: float = RELU_GAMMA,
        bias: bool = True,
    ) -> None:
        super().__init__("scaled-ws", num_channels, in_channels, kernel_size, stride, padding)
        if in_channels * kernel_size**2 < 2:
            raise OptionError(
                "scaled-ws needs at least 2 weights per filter (in_channels * kernel_size^2 >= 2)"
            )
        if not eps > 0:
            raise OptionError(f"scaled-ws eps must be positive, got {eps}")
        if not (gamma > 0 and math.isfinite(gamma)):
            raise OptionError(f"scaled-ws gamma must be a positive finite number, got {gamma}")
        self.eps, self.gamma = eps, gamma
        self.weight = nn.Parameter(torch.randn(num_channels, in_channels, kernel_size, kernel_size))
        self.gain = nn.Parameter(torch.ones(num_channels))  # (Cout,)
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def effective_weight(self) -> Tensor:
        """The standardized, scaled conv weight, computed from the current parameters."""
        w = self.weight  # (Cout, Cin, k, k)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        mean = w.mean(dim=(1, 2, 3), keepdim=True)  # (Cout, 1, 1, 1)
        var = w.var(dim=(1, 2, 3), correction=0, keepdim=True)  # (Cout, 1, 1, 1)
        scale = self.gain[:, None, None, None] * (self.gamma / math.sqrt(fan_in))  # (Cout, 1, 1, 1)
        return (w - mean) * torch.rsqrt(var + self.eps) * scale  # (Cout, Cin, k, k)

    def forward(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H', W')
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}, gamma={self.gamma:.4g}, bias={self.bias is not None}"


#: The registry's factory (``fewnorm.norms.weightstd:scaled_ws``): the class itself.
scaled_ws = ScaledWSConv2d
