"""TaskNorm-I and TaskNorm-L: support-set batch moments blended with per-example moments.

Bronskill, Gordon, Requeima, Nowozin and Turner, "TaskNorm: Rethinking Batch
Normalization for Meta-Learning", ICML 2020. With ``mu_BN, var_BN`` the moments
of the task's support set over ``(N, H, W)`` and ``mu_+, var_+`` the example's
own instance (TaskNorm-I, over ``(H, W)``) or layer (TaskNorm-L, over
``(C, H, W)``) moments::

    alpha = sigmoid(scale * |support| + offset)
    mu    = alpha * mu_BN + (1 - alpha) * mu_+
    var   = alpha * (var_BN + (mu_BN - mu)^2) + (1 - alpha) * (var_+ + (mu_+ - mu)^2)
    y     = gamma * (x - mu) / sqrt(var + eps) + beta

Support pass (phase ``support``): ``mu_BN, var_BN`` are the batch's own moments,
kept with ``|support|`` in the task scope as differentiable tensors (MAML
backpropagates through them); the support set is normalized with the same blend
of its batch moments and each example's own moments, as in the paper. Query
pass (phase ``query``): the stored support moments with each query's own
moments, so queries never see each other and the output does not depend on how
queries are batched. Without a phase the batch is its own support set.
Training and evaluation mode behave alike; there are no buffers.

``scale`` and ``offset`` are one learned scalar each per layer, initialized to
zero (alpha = 0.5 at the start) as in the authors' code. Variances are the
biased (1/m) ones, where the authors' code uses the unbiased estimate, so that
single images with 1x1 maps stay finite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.phase import Phase, current_phase, task_load, task_store

#: Dimensions of the per-example ("augment") moments, by TaskNorm variant.
_OWN_DIMS = {"instance": (2, 3), "layer": (1, 2, 3)}


class TaskNorm2d(nn.Module):
    """TaskNorm: support batch moments blended with instance or layer moments."""

    def __init__(self, num_channels: int, moments: str, eps: float = 1e-5) -> None:
        super().__init__()
        if moments not in _OWN_DIMS:
            raise OptionError(f"tasknorm moments must be 'instance' or 'layer', got '{moments}'")
        if eps <= 0:
            raise OptionError(f"tasknorm eps must be positive, got {eps}")
        self.num_channels, self.moments, self.eps = num_channels, moments, eps
        self.weight = nn.Parameter(torch.ones(num_channels))  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(num_channels))  # beta (C,)
        self.scale = nn.Parameter(torch.zeros(1))  # alpha's slope in |support| (1,)
        self.offset = nn.Parameter(torch.zeros(1))  # alpha's offset (1,)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        phase = current_phase()
        if phase is Phase.QUERY:
            stored = task_load(self)
            if stored is None:
                raise RuntimeError(
                    "tasknorm saw a query pass before any support pass in this task: run the "
                    "support set under norm_phase('support') inside the same task_scope() first"
                )
            batch_mean, batch_var, support_size = stored
        else:
            batch_var, batch_mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)  # (C,)
            support_size = x.shape[0]
            if phase is Phase.SUPPORT:
                task_store(self, (batch_mean, batch_var, support_size))
        alpha = torch.sigmoid(self.scale * support_size + self.offset)  # (1,)
        mean, var = blend_moments(x, alpha, batch_mean, batch_var, _OWN_DIMS[self.moments])
        y = (x - mean) * torch.rsqrt(var + self.eps)  # (N, C, H, W)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, moments={self.moments}, eps={self.eps}"


def blend_moments(
    x: Tensor, alpha: Tensor, batch_mean: Tensor, batch_var: Tensor, own_dims: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """The pooled mean and variance of TaskNorm, shaped to broadcast against ``x``.

    ``batch_mean``, ``batch_var`` are ``(C,)``; the per-example moments of ``x`` are
    taken over ``own_dims``. Returns tensors of shape ``(N, C, 1, 1)``.
    """
    own_var, own_mean = torch.var_mean(x, dim=own_dims, unbiased=False, keepdim=True)
    bm, bv = batch_mean[None, :, None, None], batch_var[None, :, None, None]  # (1, C, 1, 1)
    mean = alpha * bm + (1 - alpha) * own_mean  # (N, C, 1, 1)
    var = alpha * (bv + (bm - mean) ** 2) + (1 - alpha) * (own_var + (own_mean - mean) ** 2)
    return mean, var


def tasknorm_i(num_channels: int, /, eps: float = 1e-5) -> TaskNorm2d:
    """TaskNorm-I: support batch moments blended with each example's instance moments."""
    return TaskNorm2d(num_channels, "instance", eps)


def tasknorm_l(num_channels: int, /, eps: float = 1e-5) -> TaskNorm2d:
    """TaskNorm-L: support batch moments blended with each example's layer moments."""
    return TaskNorm2d(num_channels, "layer", eps)
