"""Conv-4: the standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from fewnorm.backbones.blocks import conv_norm_act, norm_layer
from fewnorm.backbones.memory_format import to_channels_last
from fewnorm.norms.spec import BoundNorm


class Conv4(nn.Module):
    """Four blocks of 3x3 conv (``hidden`` filters), normalizer, ReLU, 2x2 max-pool.

    Each block pools before its ReLU (conv, norm, pool, ReLU): the same function and
    gradients as the textbook order, with the ReLU on a quarter of the elements.

    The normalizer is injected: a name and options (bound once, here), or a bound one; 28x28 Omniglot maps
    to a 64-d embedding (28 -> 14 -> 7 -> 3 -> 1), 84x84 miniImageNet to 1600-d.
    ``channels_last`` runs the blocks on NHWC activations (same function, other kernels).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        norm: str | BoundNorm = "batchnorm",
        norm_options: Mapping[str, Any] | None = None,
        depth: int = 4,
        *,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        bound = norm_layer(norm, norm_options)  # the name looked up and its options checked once
        blocks = []
        for i in range(depth):
            channels = in_channels if i == 0 else hidden
            blocks.append(conv_norm_act(channels, hidden, bound, pool=nn.MaxPool2d(2)))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, D)
        if self.channels_last:
            x = to_channels_last(x)
        return self.blocks(x).flatten(1)


def textbook_order(model: Conv4) -> Conv4:
    """A deep copy of ``model`` with every block in the textbook order conv, norm, ReLU, pool.

    The same function and weights as ``model``, computed the way other frameworks
    compute it: what benchmarks against them and tests of the pool-first order use.
    """
    model = copy.deepcopy(model)
    for block in model.blocks:
        if not isinstance(block, nn.Sequential):
            continue
        layers = list(block)
        pool = next(i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d))
        if pool + 1 < len(layers) and isinstance(layers[pool + 1], nn.ReLU):
            block[pool], block[pool + 1] = layers[pool + 1], layers[pool]
    return model
