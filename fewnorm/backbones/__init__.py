"""Backbones; the normalizer is injected by name, never hard-coded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fewnorm.backbones.blocks import conv_norm_act
from fewnorm.backbones.conv4 import Conv4
from fewnorm.names import normalize_name, unknown_name

BACKBONES = ("conv4",)


def build_backbone(
    name: str,
    *,
    in_channels: int,
    norm: str,
    norm_options: Mapping[str, Any] | None = None,
    hidden: int = 64,
) -> nn.Module:
    """Build the backbone ``name`` with the normalizer ``norm`` in every block."""
    if normalize_name(name) == "conv4":
        return Conv4(in_channels, hidden, norm, norm_options)
    raise unknown_name("backbone", name, BACKBONES)


__all__ = ["BACKBONES", "Conv4", "build_backbone", "conv_norm_act"]
