"""Variance Normalization: BatchNorm that scales by the batch deviation but never centers.

As defined in Lubana, Dick and Tanaka, "Beyond BatchNorm: Towards a Unified
Understanding of Normalization in Deep Learning", NeurIPS 2021 (after
Daneshmand et al., "Batch Normalization Provably Avoids Rank Collapse for
Randomly Initialised Deep Networks", NeurIPS 2020)::

    var = Var_{N,H,W}(x)                 # per channel, centered, biased (1/m)
    y   = gamma * x / sqrt(var + eps) + beta

The *input* is never centered (its mean survives, scaled by 1/std), but the
variance is the ordinary centered batch variance, as in the authors' reference
code: the output has per-channel variance 1 (before the affine map), not second
moment 1. Training uses the batch variance and updates ``running_var``;
evaluation divides by ``running_var``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.fewshot import check_mode, select_statistics
from fewnorm.norms.running import update_running_


def check_momentum_eps(norm: str, momentum: float, eps: float) -> None:
    """Raise :class:`OptionError` for a momentum outside [0, 1] or a non-positive eps."""
    if not 0.0 <= momentum <= 1.0:
        raise OptionError(f"{norm} momentum must lie in [0, 1], got {momentum}")
    if eps <= 0:
        raise OptionError(f"{norm} eps must be positive, got {eps}")


@torch.no_grad()
def update_running_var(running_var: Tensor, var: Tensor, m: int, momentum: float) -> None:
    """``running_var <- (1 - momentum) * running_var + momentum * unbiased(var)``, in place.

    ``var`` is the biased batch variance over ``m`` values per channel; the running
    estimate stores the unbiased one, as torch's BatchNorm does.
    """
    unbiased = var.detach() * (m / max(m - 1, 1))  # (C,)
    update_running_(running_var, unbiased.to(running_var.dtype), momentum)


class RunningVarianceNorm(nn.Module):
    """A normalizer that divides by the per-channel batch deviation over ``(N, H, W)`` and keeps
    a running variance for evaluation (VarianceNorm, EvoNorm-B0): their checks, buffer and
    statistics, written once."""

    running_var: Tensor

    def __init__(self, name: str, num_channels: int, momentum: float, eps: float, mode: str) -> None:
        super().__init__()
        check_momentum_eps(name, momentum, eps)
        self.mode = check_mode(name, mode)
        self.num_channels, self.momentum, self.eps = num_channels, momentum, eps
        self.register_buffer("running_var", torch.ones(num_channels))

    def channel_variance(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (C,)
        """The biased batch variance or ``running_var``, as the few-shot mode decides; moves
        ``running_var`` when a training pass uses the batch's."""
        var, from_batch = select_statistics(
            self, self.mode, lambda: x.var(dim=(0, 2, 3), unbiased=False), lambda: self.running_var
        )  # (C,)
        if self.training and from_batch:
            update_running_var(self.running_var, var, x.numel() // x.shape[1], self.momentum)
        return var

    def extra_repr(self) -> str:
        return f"{self.num_channels}, momentum={self.momentum}, eps={self.eps}, mode={self.mode}"


class VarianceNorm2d(RunningVarianceNorm):
    """Divide each channel by its batch standard deviation over ``(N, H, W)``, no centering.

    ``mode`` is the few-shot mode (:mod:`fewnorm.norms.fewshot`).
    """

    def __init__(
        self,
        num_channels: int,
        /,
        momentum: float = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        mode: str = "running",
    ) -> None:
        super().__init__("variancenorm", num_channels, momentum, eps, mode)
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        scale = torch.rsqrt(self.channel_variance(x) + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight
        y = x * scale[None, :, None, None]
        return y if self.bias is None else y + self.bias[None, :, None, None]


#: The registry's factory (``fewnorm.norms.variance:variancenorm``): the class itself.
variancenorm = VarianceNorm2d
