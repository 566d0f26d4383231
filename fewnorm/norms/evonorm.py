"""EvoNorm-S0 and EvoNorm-B0: evolved normalization-activation layers.

Liu, Brock, Simonyan and Le, "Evolving Normalization-Activation Layers",
NeurIPS 2020. Studied in Lubana, Dick and Tanaka, "Beyond BatchNorm",
NeurIPS 2021. Both replace normalization and activation (``norm-act``)::

    S0: y = x * sigmoid(v * x) / group_std(x) * gamma + beta
    B0: y = x / max(sqrt(batch_var + eps), v * x + instance_std(x)) * gamma + beta

``group_std`` is ``sqrt(Var + eps)`` over ``(C/G, H, W)`` per sample and group,
``instance_std`` the same over ``(H, W)`` per sample and channel, ``batch_var``
the variance over ``(N, H, W)`` per channel (a running estimate at evaluation).
Variances are the biased (1/m) ones so that single images and 1x1 maps stay
finite. ``v``, ``gamma`` start at one and ``beta`` at zero, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.group import resolve_groups
from fewnorm.norms.variance import RunningVarianceNorm


def _std(x: Tensor, dim: tuple[int, ...], eps: float) -> Tensor:
    """``sqrt(Var + eps)`` over ``dim`` (biased), keeping dims."""
    return torch.sqrt(x.var(dim=dim, unbiased=False, keepdim=True) + eps)


class EvoNormS02d(nn.Module):
    """EvoNorm-S0: a SiLU-like numerator over a per-sample group standard deviation.

    ``groups=None`` means 32, lowered to the largest divisor of the channels.
    """

    def __init__(self, num_channels: int, /, groups: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        groups = resolve_groups("evonorm-s0 groups", num_channels, groups)
        if eps <= 0:
            raise OptionError(f"evonorm-s0 eps must be positive, got {eps}")
        self.num_channels, self.groups, self.eps = num_channels, groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels))  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # beta (C,)
        self.v = nn.Parameter(torch.ones(num_channels))  # (C,)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        n, c, h, w = x.shape
        grouped = x.reshape(n, self.groups, c // self.groups, h, w)  # (N, G, C/G, H, W)
        std = _std(grouped, (2, 3, 4), self.eps).expand_as(grouped).reshape(n, c, h, w)
        num = x * torch.sigmoid(self.v[None, :, None, None] * x)  # (N, C, H, W)
        return num / std * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.groups}, eps={self.eps}"


class EvoNormB02d(RunningVarianceNorm):
    """EvoNorm-B0: batch deviation or ``v * x`` + instance deviation, whichever is larger.

    A running batch variance (``momentum`` as in torch's BatchNorm) serves at evaluation;
    ``mode`` is the few-shot mode of the batch variance (:mod:`fewnorm.norms.fewshot`).
    """

    def __init__(
        self, num_channels: int, /, momentum: float = 0.1, eps: float = 1e-5, mode: str = "running"
    ) -> None:
        super().__init__("evonorm-b0", num_channels, momentum, eps, mode)
        self.weight = nn.Parameter(torch.ones(num_channels))  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # beta (C,)
        self.v = nn.Parameter(torch.ones(num_channels))  # (C,)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        batch_std = torch.sqrt(self.channel_variance(x) + self.eps)[None, :, None, None]  # (1, C, 1, 1)
        local = self.v[None, :, None, None] * x + _std(x, (2, 3), self.eps)  # (N, C, H, W)
        y = x / torch.maximum(batch_std, local)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


#: The registry's factories (``fewnorm.norms.evonorm:evonorm_s0``, ``:evonorm_b0``): the classes.
evonorm_s0 = EvoNormS02d
evonorm_b0 = EvoNormB02d
