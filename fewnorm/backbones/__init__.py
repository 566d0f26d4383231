"""Backbones; the normalizer is injected by name, never hard-coded.

The registry (:mod:`fewnorm.backbones.registry`) is imported eagerly and without torch; the
modules, and :func:`build_backbone`, on first use (PEP 562), so that validating a
configuration's backbone name stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fewnorm.backbones.registry import (
    BUILTIN_BACKBONES,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

if TYPE_CHECKING:
    from fewnorm.backbones.blocks import conv_norm_act, norm_layer
    from fewnorm.backbones.build import build_backbone
    from fewnorm.backbones.conv4 import Conv4
    from fewnorm.backbones.dropblock import DropBlock2d
    from fewnorm.backbones.memory_format import to_channels_last
    from fewnorm.backbones.resnet12 import ResNet12

#: The built-in backbones, by name (``list_backbones`` adds the plugins').
BACKBONES: tuple[str, ...] = tuple(s.name for s in BUILTIN_BACKBONES)

_LAZY = {
    "Conv4": "conv4",
    "DropBlock2d": "dropblock",
    "ResNet12": "resnet12",
    "build_backbone": "build",
    "conv_norm_act": "blocks",
    "norm_layer": "blocks",
    "to_channels_last": "memory_format",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the modules that import torch load on first use.
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Conv4",
    "DropBlock2d",
    "ResNet12",
    "build_backbone",
    "conv_norm_act",
    "get_backbone_spec",
    "list_backbones",
    "norm_layer",
    "register_backbone",
    "to_channels_last",
]
