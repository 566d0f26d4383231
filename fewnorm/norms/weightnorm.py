"""Weight Normalization: a convolution whose filters are ``g * v / ||v||``.

Salimans and Kingma, "Weight Normalization: A Simple Reparameterization to
Accelerate Training of Deep Neural Networks", NeurIPS 2016; studied as a
BatchNorm alternative in Lubana, Dick and Tanaka, "Beyond BatchNorm", NeurIPS 2021.

Each output filter ``v[o]`` (``C_in x k x k``) is divided by its own norm and
scaled by a learnable ``g[o]``: the filter's direction and length are learned
separately, and the function does not change when ``v[o]`` is rescaled. No
activation statistics, so it is identical in training and evaluation and safe
for single images. This module also holds the geometry check and base class
(:class:`NormConv2d`) that every conv-owning normalizer shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError


def check_conv_geometry(
    name: str, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> None:
    """Reject conv geometry that no convolution can have, with one clear sentence."""
    for key, value, low in (
        ("in_channels", in_channels, 1),
        ("num_channels", out_channels, 1),
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"{name}: {key} must be an integer >= {low}, got {value!r}")


class NormConv2d(nn.Module):
    """Base of the conv-owning normalizers: the conv geometry, checked and stored once."""

    def __init__(
        self, name: str, out_channels: int, in_channels: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        super().__init__()
        check_conv_geometry(name, in_channels, out_channels, kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class WeightNormConv2d(NormConv2d):
    """Conv2d with weight ``g[o] * v[o] / (||v[o]|| + eps)`` per output filter ``o``.

    ``v`` starts Kaiming-normal (ReLU gain) and ``g`` starts at ``||v[o]|| + eps``,
    so the initial effective weight is exactly ``v``: the layer starts as the
    plain Kaiming conv. The registered factory of ``weightnorm``: ``num_channels`` output
    filters, the conv geometry as keywords; ``bias`` keeps a bias.
    """

    def __init__(
        self,
        num_channels: int,
        /,
        in_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        eps: float = 1e-8,
        bias: bool = True,
    ) -> None:
        super().__init__("weightnorm", num_channels, in_channels, kernel_size, stride, padding)
        if not eps > 0:
            raise OptionError(f"weightnorm eps must be positive, got {eps}")
        self.eps = eps
        v = torch.empty(num_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_normal_(v, nonlinearity="relu")
        self.v = nn.Parameter(v)  # (Cout, Cin, k, k): the filters' directions
        self.g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2, 3)) + eps)  # (Cout,)
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def effective_weight(self) -> Tensor:
        """The conv weight ``g * v / (||v|| + eps)``, computed from the current parameters."""
        norm = torch.linalg.vector_norm(self.v, dim=(1, 2, 3), keepdim=True)  # (Cout, 1, 1, 1)
        return self.g[:, None, None, None] * self.v / (norm + self.eps)  # (Cout, Cin, k, k)

    def forward(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H', W')
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}, bias={self.bias is not None}"


#: The registry's factory (``fewnorm.norms.weightnorm:weightnorm``): the class itself.
weightnorm = WeightNormConv2d
