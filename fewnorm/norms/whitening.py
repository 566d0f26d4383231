"""Shared helpers of the whitening normalizers (SWBN, IterNorm): channel groups and option checks.

A whitening normalizer works on groups of ``Cg`` channels: the activations
``(N, C, H, W)`` become ``G = C / Cg`` matrices of shape ``(Cg, m)`` with
``m = N*H*W`` columns, whitened by batched ``(G, Cg, Cg)`` matrix products.
"""

from __future__ import annotations

from torch import Tensor

from fewnorm.errors import OptionError


def resolve_group_size(norm: str, num_channels: int, group_size: int | None, default: int) -> int:
    """The channels per group: an explicit ``group_size`` must divide the channels;
    ``None`` takes ``default`` (capped at the channel count), halved until it divides them."""
    if group_size is None:
        size = max(1, min(default, num_channels))
        while num_channels % size:
            size //= 2
        return size
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise OptionError(f"{norm} group_size must be an integer, got {group_size!r}")
    if group_size < 1 or num_channels % group_size:
        raise OptionError(
            f"{norm} group_size must be a positive divisor of the {num_channels} channels, got {group_size}"
        )
    return group_size


def check_momentum(norm: str, momentum: float) -> None:
    """Reject a running-average momentum outside ``[0, 1]``."""
    if not 0.0 <= momentum <= 1.0:
        raise OptionError(f"{norm} momentum must lie in [0, 1], got {momentum}")


def check_positive(norm: str, name: str, value: float) -> None:
    """Reject a value (eps, learning rate, iteration count) that is zero or negative."""
    if not value > 0:
        raise OptionError(f"{norm} {name} must be positive, got {value}")


def to_groups(x: Tensor, group_size: int) -> Tensor:
    """``(N, C, H, W) -> (G, Cg, m)`` with ``m = N*H*W``: one column per sample and position."""
    n, c, h, w = x.shape
    return x.transpose(0, 1).reshape(c // group_size, group_size, n * h * w)


def from_groups(y: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``(G, Cg, m) -> (N, C, H, W)``, the inverse of :func:`to_groups` for ``shape``."""
    n, c, h, w = shape
    return y.reshape(c, n, h, w).transpose(0, 1)


def per_channel(v: Tensor) -> Tensor:
    """``(C,) -> (1, C, 1, 1)`` for broadcasting against ``(N, C, H, W)``."""
    return v[None, :, None, None]
