"""The normalizer check every run passes before any data is read: bind, then one dry-run block."""

from __future__ import annotations

from typing import Any

import torch

from fewnorm.errors import OptionError, PluginError
from fewnorm.norms.spec import BoundNorm


def check_bound_norm(bound: BoundNorm, channels: int) -> BoundNorm:
    """``bound``, after one tiny training-mode forward of a conv block built with it.

    A layer that fails, or returns another shape than its input's, is refused here in
    one line (an :class:`OptionError` for a built-in, a :class:`PluginError` naming the
    plugin's source otherwise), not mid-run.
    """
    from fewnorm.backbones.blocks import conv_norm_act

    spec = bound.spec
    error = OptionError if spec.source == "fewnorm" else PluginError
    where = "" if spec.source == "fewnorm" else f" (from {spec.source})"
    batch = torch.linspace(-1.0, 1.0, 2 * 8 * 8).reshape(2, 1, 8, 8)  # (2, 1, 8, 8)
    expected = (2, channels, 8, 8)
    block = conv_norm_act(1, channels, bound)  # bad option values fail here, in the factory's words
    try:
        with torch.no_grad():
            out: Any = block.train()(batch)
    except Exception as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise error(
            f"normalizer '{spec.name}'{where} fails in a conv block on a (2, 1, 8, 8) batch: {message}"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != expected:
        raise error(
            f"normalizer '{spec.name}'{where} returns {shape} for a {expected} input; "
            "a normalizer must return a tensor of its input's shape"
        )
    return bound
