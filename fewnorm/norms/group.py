"""Per-sample normalizers over channel groups: GroupNorm, LayerNorm, InstanceNorm.

Wu and He, "Group Normalization", ECCV 2018; Ba, Kiros and Hinton, "Layer
Normalization", 2016; Ulyanov, Vedaldi and Lempitsky, "Instance Normalization",
2016. All three are GroupNorm with G groups: LayerNorm is G = 1 (moments over
(C, H, W)), InstanceNorm is G = C (moments over (H, W)). Studied for few-shot
and small-batch regimes in Lubana, Dick and Tanaka, "Beyond BatchNorm", NeurIPS 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError


class GroupNorm2d(nn.Module):
    """Normalize each sample over ``(C/G, H, W)`` per group, then a per-channel affine map."""

    def __init__(self, num_channels: int, groups: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if groups < 1 or num_channels % groups:
            raise OptionError(
                f"groups must be a positive divisor of the {num_channels} channels, got {groups}"
            )
        if eps <= 0:
            raise OptionError(f"eps must be positive, got {eps}")
        self.num_channels, self.groups, self.eps = num_channels, groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}"


def _default_groups(num_channels: int, wanted: int = 32) -> int:
    groups = min(wanted, num_channels)
    while num_channels % groups:
        groups -= 1
    return groups


def groupnorm(
    num_channels: int,
    /,
    groups: int | None = None,
    group_size: int | None = None,
    eps: float = 1e-5,
    affine: bool = True,
) -> GroupNorm2d:
    """GroupNorm with ``groups`` groups or groups of ``group_size`` channels (default 32 groups)."""
    if groups is not None and group_size is not None:
        raise OptionError("groupnorm takes groups or group_size, not both")
    if group_size is not None:
        if group_size < 1 or num_channels % group_size:
            raise OptionError(
                f"group_size must be a positive divisor of the {num_channels} channels, got {group_size}"
            )
        groups = num_channels // group_size
    return GroupNorm2d(num_channels, groups or _default_groups(num_channels), eps, affine)


def layernorm(num_channels: int, /, eps: float = 1e-5, affine: bool = True) -> GroupNorm2d:
    """LayerNorm over ``(C, H, W)`` per sample (GroupNorm with one group)."""
    return GroupNorm2d(num_channels, 1, eps, affine)


def instancenorm(num_channels: int, /, eps: float = 1e-5, affine: bool = True) -> GroupNorm2d:
    """InstanceNorm over ``(H, W)`` per sample and channel (GroupNorm with C groups)."""
    return GroupNorm2d(num_channels, num_channels, eps, affine)
