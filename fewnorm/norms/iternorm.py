"""IterNorm: whitening by a few Newton-Schulz iterations, differentiated through.

Huang, Zhou, Zhu, Liu and Shao, "Iterative Normalization: Beyond
Standardization towards Efficient Whitening", CVPR 2019. Per group of ``Cg``
channels: centre, ``S = Xc Xc^T / m + eps I``, ``S_N = S / tr(S)``,
``P_0 = I``, ``P_{k+1} = 1.5 P_k - 0.5 P_k^3 S_N`` for ``T`` steps,
``W = P_T / sqrt(tr(S))``, output ``gamma * W Xc + beta``. With a small ``T``
the iteration stops short of ``S^{-1/2}`` on purpose (the paper's "partial
whitening"). Plain tensor operations throughout, so autograd differentiates
every iteration, twice if asked. The authors' PyTorch code
(huangleiBuaa/IterNorm-pytorch, ``extension/normailzation/iterative_normalization.py``)
has a hand-written backward that still runs on torch 2.14 and matches this
module's gradient (to 1e-14 in float64), but it is first-order only (no
second-order MAML), cannot run twice over one graph (it transposes its saved
matrices in place), and with more than one group a freshly built float32
module fails in the forward: its running whitening buffer is
``eye(Cg).expand(G, Cg, Cg)`` and the in-place running update raises "more than
one element of the written-to tensor refers to a single memory location" (a
copy such as ``.double()`` hides it). The iteration runs in its coupled form
(``Y_0 = S_N``, ``T_k = 1.5 I - 0.5 P_k Y_k``, ``Y_{k+1} = Y_k T_k``,
``P_{k+1} = T_k P_k``): the same iterates ``P_k`` for the same three matrix
products per step, but rounding errors do not grow; the uncoupled form
blows up after a few dozen steps (NaN by T = 50 in float64 even for a
16 x 16 ``S`` of condition number 5). ``eps I`` keeps ``S`` positive definite
when ``m < Cg``; the trace normalization keeps the eigenvalues of ``S_N`` in
``(0, 1]``, where the iteration converges.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.fewshot import check_mode, select_statistics
from fewnorm.norms.running import update_running_
from fewnorm.norms.whitening import (
    check_momentum,
    check_positive,
    from_groups,
    per_channel,
    resolve_group_size,
    to_groups,
)

DEFAULT_GROUP_SIZE = 64


def newton_schulz_whitening(xc: Tensor, iterations: int, eps: float) -> Tensor:
    """The IterNorm whitening matrices ``(G, Cg, Cg)`` of centred groups ``xc`` ``(G, Cg, m)``."""
    cg, m = xc.shape[1], xc.shape[2]
    eye = torch.eye(cg, dtype=xc.dtype, device=xc.device)
    s = xc @ xc.transpose(1, 2) / m + eps * eye  # (G, Cg, Cg)
    trace = s.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]  # (G, 1, 1)
    s_n = s / trace  # (G, Cg, Cg), eigenvalues in (0, 1]
    y, p = s_n, eye.expand_as(s)  # y_k = S_N P_k in exact arithmetic
    for _ in range(iterations):
        t = 1.5 * eye - 0.5 * (p @ y)  # (G, Cg, Cg)
        y, p = y @ t, t @ p  # p_{k+1} = 1.5 P_k - 0.5 P_k^3 S_N
    return p * torch.rsqrt(trace)


class IterNorm2d(nn.Module):
    """Centre per channel and whiten each group of ``Cg`` channels with ``T`` Newton-Schulz steps.

    Training uses the batch's mean and whitening matrix and moves the running
    ones by ``momentum``; evaluation applies the running ones. ``group_size``
    defaults to 64 channels, halved until it divides the channels (an explicit
    value must divide them); ``iterations`` is the paper's T; ``mode`` is the
    few-shot mode (:mod:`fewnorm.norms.fewshot`).
    """

    running_mean: Tensor
    running_whitening: Tensor

    def __init__(
        self,
        num_channels: int,
        /,
        group_size: int | None = None,
        iterations: int = 5,
        momentum: float = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        mode: str = "running",
    ) -> None:
        super().__init__()
        group_size = resolve_group_size("iternorm", num_channels, group_size, DEFAULT_GROUP_SIZE)
        self.mode = check_mode("iternorm", mode)
        if isinstance(iterations, bool) or not isinstance(iterations, int):
            raise OptionError(f"iternorm iterations must be a positive integer, got {iterations!r}")
        check_positive("iternorm", "iterations", iterations)
        check_momentum("iternorm", momentum)
        check_positive("iternorm", "eps", eps)
        self.num_channels, self.group_size, self.iterations = num_channels, group_size, iterations
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None
        groups = num_channels // group_size
        eye = torch.eye(group_size).expand(groups, group_size, group_size)
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_whitening", eye.clone())  # (G, Cg, Cg)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        centred: list[Tensor] = []  # the batch's centred groups, reused below (one graph node)

        def batch() -> tuple[Tensor, Tensor]:
            mean = x.mean(dim=(0, 2, 3))  # (C,)
            centred.append(to_groups(x - per_channel(mean), self.group_size))  # (G, Cg, m)
            return mean, newton_schulz_whitening(centred[0], self.iterations, self.eps)  # (C,), (G, Cg, Cg)

        (mean, whitening), from_batch = select_statistics(self, self.mode, batch, self._running)
        if self.training and from_batch:
            with torch.no_grad():
                update_running_(self.running_mean, mean.detach(), self.momentum)
                update_running_(self.running_whitening, whitening.detach(), self.momentum)
        # (G, Cg, m): the batch's own, or centred with stored/running moments
        xc = centred[0] if from_batch else to_groups(x - per_channel(mean), self.group_size)
        y = from_groups(whitening @ xc, x.shape)  # (N, C, H, W)
        if self.weight is not None:
            y = y * per_channel(self.weight)
        return y if self.bias is None else y + per_channel(self.bias)

    def _running(self) -> tuple[Tensor, Tensor]:
        return self.running_mean, self.running_whitening.detach().clone()  # (C,), (G, Cg, Cg)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, group_size={self.group_size}, iterations={self.iterations}, "
            f"momentum={self.momentum}, eps={self.eps}, mode={self.mode}"
        )


#: The registry's factory (``fewnorm.norms.iternorm:iternorm``): the class itself.
iternorm = IterNorm2d
