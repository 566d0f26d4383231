"""ResNet-12: the few-shot residual network of TADAM and MetaOptNet, any normalizer injected.

Oreshkin, Rodriguez and Lacoste, "TADAM", NeurIPS 2018; Lee, Maji, Ravichandran and
Soatto, "Meta-Learning with Differentiable Convex Optimization" (MetaOptNet), CVPR 2019.

Four residual blocks of widths 64-160-320-640. A block is three 3x3 conv-norm layers (a
LeakyReLU(0.1) after the first two), a 1x1 conv-norm shortcut, the sum, LeakyReLU(0.1),
a 2x2 max-pool, and optionally DropBlock (blocks 3 and 4, as in MetaOptNet). The
activation is MetaOptNet's LeakyReLU with slope 0.1. The embedding is the flattened last
map, as in MetaOptNet's ProtoNet: 84x84 -> 640x5x5 (16000-d), 28x28 -> 640x1x1.

Every conv-norm, the shortcut's included, comes from
:func:`~fewnorm.backbones.blocks.conv_norm_act` by the normalizer's kind:

- ``activation``: ``conv -> norm``, then LeakyReLU where the block has one;
- ``conv``: the normalizer owns each conv, the 1x1 shortcut too (it gets the geometry);
- ``norm-act``: ``conv -> norm-act`` everywhere, the third layer and the shortcut
  included, and no LeakyReLU at all. A norm-act cannot be split into its normalization
  and its activation through the registry, and it is meant to replace every activation;
  so the residual branch and the shortcut each end in the normalizer's own nonlinearity
  (FRN's TLU, EvoNorm's gating) and their sum goes straight to the pool. This keeps four
  normalization layers per block for every kind, which keeps normalizers comparable.

Weights keep PyTorch's default initialization, as Conv-4 does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from fewnorm.backbones.blocks import conv_norm_act, norm_layer
from fewnorm.backbones.dropblock import DropBlock2d
from fewnorm.backbones.memory_format import to_channels_last
from fewnorm.errors import OptionError
from fewnorm.norms import NormKind
from fewnorm.norms.spec import BoundNorm

WIDTHS: tuple[int, ...] = (64, 160, 320, 640)
LEAKY_SLOPE = 0.1
#: Blocks (0-based) that get DropBlock when it is on, as in MetaOptNet.
DROPBLOCK_BLOCKS: tuple[int, ...] = (2, 3)


def _layer(
    in_channels: int,
    out_channels: int,
    norm: BoundNorm,
    *,
    kernel_size: int = 3,
    activation: bool = True,
) -> nn.Sequential:
    """``conv -> norm`` (+ LeakyReLU when ``activation`` and the kind is not norm-act)."""
    layer = conv_norm_act(
        in_channels,
        out_channels,
        norm,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        activation=False,
    )
    if activation and norm.spec.kind is not NormKind.NORM_ACT:
        layer.append(nn.LeakyReLU(LEAKY_SLOPE))
    return layer


class ResidualBlock(nn.Module):
    """Three 3x3 conv-norm layers plus a 1x1 conv-norm shortcut, then activation, pool, DropBlock."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str | BoundNorm,
        norm_options: Mapping[str, Any] | None = None,
        *,
        dropblock: float = 0.0,
        dropblock_size: int = 5,
    ) -> None:
        super().__init__()
        bound = norm_layer(norm, norm_options)
        self.conv1 = _layer(in_channels, out_channels, bound)
        self.conv2 = _layer(out_channels, out_channels, bound)
        self.conv3 = _layer(out_channels, out_channels, bound, activation=False)
        self.shortcut = _layer(in_channels, out_channels, bound, kernel_size=1, activation=False)
        norm_act = bound.spec.kind is NormKind.NORM_ACT
        self.act: nn.Module = nn.Identity() if norm_act else nn.LeakyReLU(LEAKY_SLOPE)
        self.pool = nn.MaxPool2d(2)
        self.drop: nn.Module = DropBlock2d(dropblock, dropblock_size) if dropblock > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W) -> (N, C_out, H/2, W/2)
        out = self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x)  # (N, C_out, H, W)
        return self.drop(self.pool(self.act(out)))


class ResNet12(nn.Module):
    """ResNet-12 (widths 64-160-320-640) with the normalizer ``norm`` in every layer.

    ``dropblock`` is DropBlock's drop probability in blocks 3 and 4 (0, the default,
    turns it off), ``dropblock_size`` its block size (5 in MetaOptNet; MetaOptNet also
    ramps the probability up over training, which this module leaves to the caller).
    ``channels_last`` runs the blocks on NHWC activations (same function, other kernels).
    """

    def __init__(
        self,
        in_channels: int = 3,
        norm: str | BoundNorm = "batchnorm",
        norm_options: Mapping[str, Any] | None = None,
        *,
        widths: Sequence[int] = WIDTHS,
        dropblock: float = 0.0,
        dropblock_size: int = 5,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        if not widths or any(w < 1 for w in widths):
            raise OptionError(f"resnet12 widths must be positive integers, got {list(widths)}")
        if not 0.0 <= dropblock < 1.0:
            raise OptionError(f"dropblock probability must be in [0, 1), got {dropblock}")
        bound = norm_layer(norm, norm_options)  # the name looked up and its options checked once
        blocks = []
        for i, width in enumerate(widths):
            blocks.append(
                ResidualBlock(
                    in_channels if i == 0 else widths[i - 1],
                    width,
                    bound,
                    dropblock=dropblock if i in DROPBLOCK_BLOCKS else 0.0,
                    dropblock_size=dropblock_size,
                )
            )
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, D)
        if self.channels_last:
            x = to_channels_last(x)
        return self.blocks(x).flatten(1)
