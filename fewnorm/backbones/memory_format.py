"""NHWC ("channels last") activations for the conv backbones.

A conv whose input is laid out NHWC writes NHWC, and the normalizer, ReLU and
pooling after it keep that layout, so converting the backbone's input once puts
the whole backbone on NHWC kernels. On the 2-core CPUs here BatchNorm and max-pool
run 2-8x faster on NHWC than on NCHW, and a Conv-4 ProtoNet step with BatchNorm
about 1.4x (benchmarks/memory_format.py measures every registered normalizer;
``NormSpec.channels_last`` records which gain).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewnorm.norms.phase import in_vectorized_tasks


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` (N, C, H, W) with NHWC strides; the values and shape are unchanged.

    One channel (Omniglot) is NHWC in memory already, but torch reads its default
    strides as NCHW and would keep the first block on NCHW kernels (its conv measured
    15x slower): a view with NHWC strides costs nothing and says otherwise. Under
    ``vectorized_tasks()`` the input is left alone: vmap turns each conv into one
    grouped conv over the tasks and picks its own layout.
    """
    if x.dim() != 4 or in_vectorized_tasks():
        return x
    if x.shape[1] != 1:
        return x.contiguous(memory_format=torch.channels_last)
    x = x.contiguous()
    _, _, height, width = x.shape
    return x.as_strided(x.shape, (height * width, 1, width, 1))
