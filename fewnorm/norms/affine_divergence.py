"""The affine-divergence fully-connected layer: ``(W x + b) / sqrt(||x||^2 + 1)``.

George Bird, "The Affine Divergence: Aligning Activation Updates Beyond
Normalisation", arXiv 2512.22247, 2025. One SGD step of learning rate ``lr`` on
an affine layer ``z = W x + b`` with upstream gradient ``g`` moves that
sample's output by ``-lr * g * (||x||^2 + 1)``: every sample gets its own
effective step size. Dividing by that factor's square root removes it:

- ``affine`` (the paper's alternative to the affine map, no epsilon needed):
  ``z = (W x + b) / sqrt(||x||^2 + 1)``. Writing ``u = [x, 1] / sqrt(||x||^2 + 1)``,
  a unit vector, ``z = [W, b] u`` and the step moves the output by exactly
  ``-lr * g * ||u||^2 = -lr * g``.
- ``norm`` (L2-normalized input): ``z = W x / (||x|| + eps) + b``; the step moves
  the output by ``-lr * g * (1 + ||x||^2 / (||x|| + eps)^2)``, about ``-2 lr g``
  for every sample.

Initialization: the layer sees a unit-norm input ``u``, not one whose entries
have unit second moment, so the fan-in scaling of the usual inits would shrink
the output by ``sqrt(in_features)``. The weights are drawn ``N(0, 1 / fan_in)``
times ``init_gain``, which defaults to ``sqrt(fan_in)``: unit-variance entries,
hence unit-variance outputs (``Var z = ||u||^2``) as for a logit layer.
This module is a classifier head, not a registered normalizer; PatchNorm is
its convolutional form and shares :func:`safe_norm`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError

VARIANTS = ("affine", "norm")


def safe_norm(squared: Tensor) -> Tensor:
    """``sqrt(squared)`` with finite first and second derivatives, also at zero.

    Squared norms below ``sqrt(finfo.tiny)`` (norms below about 3e-10 in float32)
    count as 0, where the gradient is taken as 0 (a subgradient of the norm); the
    derivatives of ``sqrt`` stay finite on the rest.
    """
    threshold = math.sqrt(torch.finfo(squared.dtype).tiny)
    positive = squared > threshold
    return torch.where(positive, squared.clamp_min(threshold).sqrt(), torch.zeros_like(squared))


def check_variant(name: str, variant: str, eps: float) -> None:
    """Reject an unknown variant or a non-positive eps with one clear sentence."""
    if variant not in VARIANTS:
        raise OptionError(f"{name} variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    if not eps > 0:
        raise OptionError(f"{name} eps must be positive, got {eps}")


def check_init_gain(name: str, init_gain: float | None) -> None:
    if init_gain is not None and not (init_gain > 0 and math.isfinite(init_gain)):
        raise OptionError(f"{name} init_gain must be a positive number or None, got {init_gain}")


class AffineDivergenceLinear(nn.Module):
    """Fully-connected layer whose output step per SGD step is ``-lr * g`` for every sample."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        variant: str = "affine",
        eps: float = 1e-5,
        init_gain: float | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"affine-divergence {key} must be an integer >= 1, got {value!r}")
        check_variant("affine-divergence", variant, eps)
        check_init_gain("affine-divergence", init_gain)
        self.in_features, self.out_features = in_features, out_features
        self.variant, self.eps = variant, eps
        gain = math.sqrt(in_features) if init_gain is None else init_gain
        std = gain / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * std)  # (out, in)
        self.bias = nn.Parameter(torch.zeros(out_features))  # (out,)

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        squared = x.square().sum(dim=-1, keepdim=True)  # (..., 1)
        if self.variant == "affine":
            return F.linear(x, self.weight, self.bias) * torch.rsqrt(squared + 1)
        return F.linear(x, self.weight) / (safe_norm(squared) + self.eps) + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"variant={self.variant}, eps={self.eps}"
        )
