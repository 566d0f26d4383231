"""Conv-norm-activation blocks built from any registered normalizer, by its kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fewnorm.errors import OptionError
from fewnorm.norms import NormKind, get_norm
from fewnorm.norms.spec import BoundNorm


def norm_layer(norm: str | BoundNorm, norm_options: Mapping[str, Any] | None = None) -> BoundNorm:
    """``norm`` bound to its options: a name is looked up and its options checked here, once."""
    if isinstance(norm, BoundNorm):
        if norm_options:
            raise OptionError(f"normalizer '{norm.spec.name}' is bound to its options already")
        return norm
    return get_norm(norm).bind(**dict(norm_options or {}))


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    norm: str | BoundNorm,
    norm_options: Mapping[str, Any] | None = None,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
    activation: bool = True,
    pool: nn.Module | None = None,
) -> nn.Sequential:
    """``conv -> norm -> ReLU`` for the normalizer ``norm`` (bound, or a name and options), by its kind.

    - ``activation``: a plain conv, the normalizer, then ReLU;
    - ``conv``: the normalizer owns the conv (it gets the geometry), then ReLU;
    - ``norm-act``: a plain conv, then the normalizer, which is the activation too.

    ``pool`` (a max-pool) goes after the normalizer and before the ReLU: ReLU is
    monotone, so ``relu(max(x)) == max(relu(x))`` exactly and the gradients route to
    the same elements, while the ReLU and its backward touch a quarter of the
    elements. Modules without state sit between norm and pool, so the state-dict
    keys are those of ``conv, norm, ReLU, pool``.
    """
    bound = norm_layer(norm, norm_options)
    spec = bound.spec
    layers: list[nn.Module] = []
    if spec.kind is NormKind.CONV:
        geometry = {
            "in_channels": in_channels,
            "kernel_size": kernel_size,
            "stride": stride,
            "padding": padding,
        }
        layers.append(bound(out_channels, **geometry))
    else:
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=spec.conv_bias))
        layers.append(bound(out_channels))
    if pool is not None:
        layers.append(pool)
    if activation and spec.kind is not NormKind.NORM_ACT:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)
