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

DEFAULT_GROUPS = 32


def resolve_groups(label: str, num_channels: int, groups: int | None) -> int:
    """``groups`` checked to divide the channels; ``None``: 32, lowered to the largest divisor.

    ``label`` starts the error sentence ("groups", "evonorm-s0 groups").
    """
    if groups is None:
        groups = min(DEFAULT_GROUPS, num_channels)
        while num_channels % groups:
            groups -= 1
        return groups
    check_divisor(label, num_channels, groups)
    return groups


def check_divisor(label: str, num_channels: int, value: int) -> None:
    """Reject a group count or group size that does not divide the channels."""
    if value < 1 or num_channels % value:
        raise OptionError(f"{label} must be a positive divisor of the {num_channels} channels, got {value}")


class GroupNorm2d(nn.Module):
    """Normalize each sample over ``(C/G, H, W)`` per group, then a per-channel affine map.

    ``groups`` groups or groups of ``group_size`` channels (default 32 groups, lowered
    to the largest divisor of the channels); the registered factory of ``groupnorm``.
    """

    def __init__(
        self,
        num_channels: int,
        /,
        groups: int | None = None,
        group_size: int | None = None,
        eps: float = 1e-5,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if groups is not None and group_size is not None:
            raise OptionError("groupnorm takes groups or group_size, not both")
        if group_size is not None:
            check_divisor("group_size", num_channels, group_size)
            groups = num_channels // group_size
        groups = resolve_groups("groups", num_channels, groups or None)  # groups=0: the default
        if eps <= 0:
            raise OptionError(f"eps must be positive, got {eps}")
        self.num_channels, self.groups, self.eps = num_channels, groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}"


#: The registry's factory (``fewnorm.norms.group:groupnorm``): the class itself.
groupnorm = GroupNorm2d


def layernorm(num_channels: int, /, eps: float = 1e-5, affine: bool = True) -> GroupNorm2d:
    """LayerNorm over ``(C, H, W)`` per sample (GroupNorm with one group)."""
    return GroupNorm2d(num_channels, groups=1, eps=eps, affine=affine)


def instancenorm(num_channels: int, /, eps: float = 1e-5, affine: bool = True) -> GroupNorm2d:
    """InstanceNorm over ``(H, W)`` per sample and channel (GroupNorm with C groups)."""
    return GroupNorm2d(num_channels, groups=num_channels, eps=eps, affine=affine)
