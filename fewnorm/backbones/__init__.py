"""Backbones; the normalizer is injected by name, never hard-coded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fewnorm.backbones.blocks import conv_norm_act, norm_layer
from fewnorm.backbones.conv4 import Conv4
from fewnorm.backbones.dropblock import DropBlock2d
from fewnorm.backbones.memory_format import to_channels_last
from fewnorm.backbones.resnet12 import ResNet12
from fewnorm.errors import OptionError
from fewnorm.names import normalize_name, unknown_name
from fewnorm.norms.spec import BoundNorm

BACKBONES = ("conv4", "resnet12")


def build_backbone(
    name: str,
    *,
    in_channels: int,
    norm: str | BoundNorm,
    norm_options: Mapping[str, Any] | None = None,
    hidden: int = 64,
    dropblock: float = 0.0,
    dropblock_size: int = 5,
    channels_last: bool = False,
) -> nn.Module:
    """Build the backbone ``name`` with the normalizer ``norm`` in every block.

    ``norm`` is a bound normalizer (``get_norm(name).bind(**options)``) or a name with
    ``norm_options``, bound here: either way its options are checked once, not per block.

    ``hidden`` is Conv-4's width (ResNet-12's widths are fixed at 64-160-320-640).
    ``dropblock`` (a drop probability, 0 = off) and ``dropblock_size`` switch on DropBlock
    in ResNet-12's last two blocks; Conv-4 has none. ``channels_last`` runs the
    backbone on NHWC activations (:mod:`fewnorm.backbones.memory_format`).
    """
    key = normalize_name(name)
    norm = norm_layer(norm, norm_options)
    if key == "conv4":
        if dropblock:
            raise OptionError("dropblock applies to the resnet12 backbone only, not conv4")
        return Conv4(in_channels, hidden, norm, channels_last=channels_last)
    if key == "resnet12":
        return ResNet12(
            in_channels,
            norm,
            dropblock=dropblock,
            dropblock_size=dropblock_size,
            channels_last=channels_last,
        )
    raise unknown_name("backbone", name, BACKBONES)


__all__ = [
    "BACKBONES",
    "Conv4",
    "DropBlock2d",
    "ResNet12",
    "build_backbone",
    "conv_norm_act",
    "norm_layer",
    "to_channels_last",
]
