"""SWBN: BatchNorm standardization followed by a whitening matrix learned online.

Zhang, Nezhadarya, Fashandi, Liu, Graham and Shah, "Stochastic Whitening Batch
Normalization", CVPR 2021 (arXiv 2106.04413). Instead of recomputing a
whitening matrix at every step (IterNorm), SWBN keeps one per channel group as
a buffer and moves it by one small step of a whitening criterion per training
forward pass; the matrix is never backpropagated through.

Order within a training forward: the whitening matrix is updated in place
first, with the current batch, and the updated matrix whitens the output (the
order of the paper's algorithm). The output uses a detached copy of it, so no
autograd graph ever references the buffer that later passes modify in place.

One deliberate addition to the paper: the correlation matrix is
``S = Xs Xs^T / m + eps * diag(1 / (var + eps))``, the correlation the
standardization implies when ``eps`` is read as variance of isotropic noise.
Its diagonal is exactly 1 and it is positive definite, so the KL step has a
finite fixed point even when ``m < Cg`` (5-image supports at 1x1 resolution)
or a channel is dead; for channels with ``var >> eps`` the term is negligible.

Conventions: training standardizes with the biased batch variance (1/m) and eps
inside the root; ``running_var`` averages the unbiased one (m/(m-1) times larger:
2.3% at m = 45, a 5-image support at 3x3), as torch's BatchNorm stores it. No
authors' code is public; the one public port (TensorFlow) averages the biased
variance, so evaluation in ``running`` mode here divides by a deviation about
1.1% larger at that size. Few-shot ``mode`` and the whitening rate's coupling to
the learning-rate schedule: see :class:`StochasticWhiteningBatchNorm2d`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.fewshot import check_mode, select_statistics
from fewnorm.norms.phase import current_learning_rate_scale
from fewnorm.norms.running import update_running_
from fewnorm.norms.whitening import (
    check_momentum,
    check_positive,
    from_groups,
    per_channel,
    resolve_group_size,
    to_groups,
)

CRITERIA = ("kl", "fro")
DEFAULT_GROUP_SIZE = 16


class StochasticWhiteningBatchNorm2d(nn.Module):
    """Standardize per channel, then multiply each group of ``Cg`` channels by a learned ``W``.

    Training: batch moments standardize ``x``, the running moments move by
    ``momentum``, and ``W <- sym(W - whitening_lr * dW)`` with the KL step
    ``dW = (W S W^T - I) W`` or the Frobenius step
    ``dW = (W S W^T - I) W S / ||W S W^T - I||_F``. Evaluation: running moments,
    the current ``W``, no update. Output ``gamma * (W Xs) + beta``.

    ``criterion`` kl | fro; ``whitening_lr`` is the paper's alpha; ``group_size``
    defaults to 16 channels, halved until it divides the channels (an explicit
    value must divide them); ``momentum`` of the running moments is ``1 - eta``;
    ``mode`` is the few-shot mode (:mod:`fewnorm.norms.fewshot`; the MAML family
    runs ``transductive`` unless told otherwise); with ``couple_lr`` the whitening step
    follows the network's learning-rate schedule (``whitening_lr`` times the schedule's
    current factor, as the training loop signals it), so that their ratio stays constant
    as in the paper; ``couple_lr=False`` keeps it fixed.

    ``whitening_lr`` defaults to 1e-3, not the paper's 1e-5 (tuned for ImageNet's
    ~10^5-10^6 steps). Measured on 16 channels mixed by a fixed matrix (population
    ``||W S W^T - I||_F`` from 4.5, KL, batches of m = 45 / 2000 columns): after
    20k steps 1e-5 is still at 2.7 / 2.6, 1e-4 at 0.59 / 0.45, while 1e-3 reaches
    its noise floor 0.25 / 0.02 within 5k steps; few-shot runs are 10^4 episodes.
    """

    running_mean: Tensor
    running_var: Tensor
    whitening_matrix: Tensor

    def __init__(
        self,
        num_channels: int,
        /,
        criterion: str = "kl",
        whitening_lr: float = 1e-3,
        group_size: int | None = None,
        momentum: float = 0.05,
        eps: float = 1e-5,
        affine: bool = True,
        mode: str = "running",
        couple_lr: bool = True,
    ) -> None:
        super().__init__()
        group_size = resolve_group_size("swbn", num_channels, group_size, DEFAULT_GROUP_SIZE)
        self.mode = check_mode("swbn", mode)
        self.couple_lr = couple_lr
        if criterion not in CRITERIA:
            raise OptionError(f"swbn criterion must be one of {', '.join(CRITERIA)}, got '{criterion}'")
        check_positive("swbn", "whitening_lr", whitening_lr)
        check_momentum("swbn", momentum)
        check_positive("swbn", "eps", eps)
        self.num_channels, self.group_size, self.criterion = num_channels, group_size, criterion
        self.whitening_lr, self.momentum, self.eps = whitening_lr, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None
        groups = num_channels // group_size
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))
        eye = torch.eye(group_size).expand(groups, group_size, group_size)
        self.register_buffer("whitening_matrix", eye.clone())  # (G, Cg, Cg)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        def batch() -> tuple[Tensor, Tensor]:
            return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)  # (C,), (C,)

        (mean, var), from_batch = select_statistics(self, self.mode, batch, self._running)
        xs = (x - per_channel(mean)) * per_channel(torch.rsqrt(var + self.eps))  # (N, C, H, W)
        if self.training and from_batch:  # a support-mode query pass teaches nothing
            self._update(mean, var, xs)
        whitening = self.whitening_matrix.detach().clone()  # (G, Cg, Cg), a constant in backward
        y = from_groups(whitening @ to_groups(xs, self.group_size), x.shape)  # (N, C, H, W)
        if self.weight is not None:
            y = y * per_channel(self.weight)
        return y if self.bias is None else y + per_channel(self.bias)

    def _running(self) -> tuple[Tensor, Tensor]:
        return self.running_mean, self.running_var

    @torch.no_grad()
    def _update(self, mean: Tensor, var: Tensor, xs: Tensor) -> None:
        """Move the running moments and take one whitening step on the buffer ``W``."""
        m = xs.numel() // xs.shape[1]
        update_running_(self.running_mean, mean.detach(), self.momentum)
        update_running_(self.running_var, var.detach() * (m / max(m - 1, 1)), self.momentum)
        cg = self.group_size
        xg = to_groups(xs.detach(), cg)  # (G, Cg, m)
        floor = (self.eps / (var.detach() + self.eps)).reshape(-1, cg)  # (G, Cg)
        s = xg @ xg.transpose(1, 2) / m + torch.diag_embed(floor)  # (G, Cg, Cg)
        w = self.whitening_matrix  # (G, Cg, Cg)
        residual = w @ s @ w.transpose(1, 2) - torch.eye(cg, dtype=w.dtype, device=w.device)
        step = residual @ w  # (G, Cg, Cg), KL: relative gradient, no inverse
        if self.criterion == "fro":
            norm = torch.linalg.matrix_norm(residual)  # (G,) Frobenius
            step = step @ s / norm.clamp_min(torch.finfo(w.dtype).eps)[:, None, None]
        rate = self.whitening_lr * (current_learning_rate_scale() if self.couple_lr else 1.0)
        w.sub_(rate * step)
        w.copy_((w + w.transpose(1, 2)) / 2)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, group_size={self.group_size}, criterion={self.criterion}, "
            f"whitening_lr={self.whitening_lr}, momentum={self.momentum}, eps={self.eps}, mode={self.mode}, "
            f"couple_lr={self.couple_lr}"
        )


#: The registry's factory (``fewnorm.norms.swbn:swbn``): the class itself.
swbn = StochasticWhiteningBatchNorm2d
