"""BatchNorm with the few-shot modes: ``transductive``, ``running`` and ``support``.

Ioffe and Szegedy, "Batch Normalization", ICML 2015. The modes follow Bronskill
et al., "TaskNorm: Rethinking Batch Normalization for Meta-Learning", ICML 2020
(``support`` is their MetaBN): which moments normalize a task's query set is
what decides whether a few-shot model is transductive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.fewshot import check_mode, select_statistics
from fewnorm.norms.phase import in_vectorized_tasks
from fewnorm.norms.running import update_running_


class FewShotBatchNorm2d(nn.Module):
    """BatchNorm over ``(N, H, W)`` per channel, with an explicit few-shot mode.

    - ``transductive``: batch moments of whatever is passed, in training and evaluation;
    - ``running``: batch moments in training, running averages in evaluation;
    - ``support``: the support set's moments normalize support and query alike
      (needs the phase signal; without one it falls back to batch moments).
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self,
        num_channels: int,
        /,
        mode: str = "transductive",
        momentum: float = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
    ) -> None:
        super().__init__()
        check_mode("batchnorm", mode)
        if not 0.0 <= momentum <= 1.0:
            raise OptionError(f"batchnorm momentum must lie in [0, 1], got {momentum}")
        if eps <= 0:
            raise OptionError(f"batchnorm eps must be positive, got {eps}")
        self.num_channels, self.mode, self.momentum, self.eps = num_channels, mode, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C, H, W)
        if self.mode == "support":
            return self._support_forward(x)
        use_batch = self.training or self.mode == "transductive"
        track = self.training  # buffers move only in training mode
        if in_vectorized_tasks():  # vmap over tasks: F.batch_norm's batched double backward is wrong
            return self._explicit_forward(x, use_batch, track)
        return F.batch_norm(
            x,
            self.running_mean if (track or not use_batch) else None,
            self.running_var if (track or not use_batch) else None,
            self.weight,
            self.bias,
            use_batch,
            self.momentum,
            self.eps,
        )

    def _explicit_forward(self, x: Tensor, use_batch: bool, track: bool) -> Tensor:
        """What ``F.batch_norm`` computes, from explicit moments (same values, other rounding)."""
        if not use_batch:
            return self._normalize(x, self.running_mean, self.running_var)
        mean = x.mean(dim=(0, 2, 3))  # (C,)
        var = x.var(dim=(0, 2, 3), unbiased=False)  # (C,)
        if track:
            self._update_running(mean, var, x.numel() // x.shape[1])
        return self._normalize(x, mean, var)

    def _support_forward(self, x: Tensor) -> Tensor:
        def batch() -> tuple[Tensor, Tensor]:
            return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)  # (C,), (C,)

        (mean, var), from_batch = select_statistics(self, self.mode, batch, self._running)
        if from_batch and self.training:
            self._update_running(mean, var, x.numel() // x.shape[1])
        return self._normalize(x, mean, var)

    def _running(self) -> tuple[Tensor, Tensor]:
        return self.running_mean, self.running_var

    def _normalize(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:  # moments (C,)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        y = (x - mean[None, :, None, None]) * scale[None, :, None, None]
        return y if self.bias is None else y + self.bias[None, :, None, None]

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, m: int) -> None:
        unbiased = var * (m / max(m - 1, 1))
        update_running_(self.running_mean, mean.detach(), self.momentum)
        update_running_(self.running_var, unbiased.detach(), self.momentum)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, mode={self.mode}, momentum={self.momentum}, eps={self.eps}"


#: The registry's factory (``fewnorm.norms.batch:batchnorm``): the class itself.
batchnorm = FewShotBatchNorm2d
