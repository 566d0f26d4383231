"""Running-average updates of normalizer buffers, written so that ``vmap`` batches them."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def update_running_(buffer: Tensor, value: Tensor, momentum: float) -> None:
    """``buffer <- (1 - momentum) * buffer + momentum * value``, in place.

    The same arithmetic as ``buffer.lerp_(value, momentum)``, but ``lerp_`` has no
    batching rule: under ``vmap`` over a meta-batch's tasks (each with its own buffer
    copies) it falls back to a slow per-task loop with a warning; ``lerp`` + ``copy_``
    are batched.
    """
    buffer.copy_(torch.lerp(buffer, value.detach().to(buffer.dtype), momentum))
