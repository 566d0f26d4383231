"""The backbone registry: every embedding network by name, with the options it accepts (no torch import).

A :class:`BackboneSpec`'s factory (``"module:attribute"``, imported on first use) is called as
``factory(in_channels, norm=bound_norm, channels_last=..., **options)`` with the options it
declares, of ``hidden``, ``dropblock`` and ``dropblock_size`` (the run configuration's keys).
Third-party backbones arrive through the entry-point group ``fewnorm.backbones`` or
:func:`register_backbone`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fewnorm.norms.plugins import entry_point_discoverer
from fewnorm.registry import Registry, load_object

#: The options a backbone may accept, with the values that leave them off or at the default.
OPTIONS: dict[str, Any] = {"hidden": 64, "dropblock": 0.0, "dropblock_size": 5}


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone."""

    name: str
    factory: Callable[..., Any] | str = field(repr=False, compare=False)
    summary: str
    paper: str
    options: tuple[str, ...] = ()  # which of OPTIONS it accepts
    aliases: tuple[str, ...] = ()
    source: str = "fewnorm"

    def __post_init__(self) -> None:
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"{self.name}: unknown options {sorted(unknown)}; use {tuple(OPTIONS)}")

    def load(self) -> Callable[..., Any]:
        """The factory, imported on first use if it was given as ``"module:attribute"``."""
        return load_object(self.factory)


BUILTIN_BACKBONES: tuple[BackboneSpec, ...] = (
    BackboneSpec(
        name="conv4",
        factory="fewnorm.backbones.conv4:Conv4",
        summary="Four 3x3 conv-norm-ReLU-pool blocks of `hidden` filters (28x28 -> 64-d, 84x84 -> 1600-d).",
        paper="Vinyals et al., Matching Networks, NeurIPS 2016; Snell et al., Prototypical Networks, 2017",
        options=("hidden",),
    ),
    BackboneSpec(
        name="resnet12",
        factory="fewnorm.backbones.resnet12:ResNet12",
        summary="Four residual blocks of widths 64-160-320-640, optional DropBlock in the last two.",
        paper="Oreshkin et al., TADAM, NeurIPS 2018; Lee et al., MetaOptNet, CVPR 2019",
        options=("dropblock", "dropblock_size"),
    ),
)

#: Third-party backbones: the entry points of this group, loaded before the first lookup.
ENTRY_POINT_GROUP = "fewnorm.backbones"

BACKBONE_REGISTRY: Registry[BackboneSpec] = Registry(
    "backbone", entry_point_discoverer(ENTRY_POINT_GROUP), BUILTIN_BACKBONES
)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered under ``name`` or an alias (closest match if unknown)."""
    return BACKBONE_REGISTRY.get(name)


def list_backbones() -> list[BackboneSpec]:
    """Every registered backbone, built-ins first."""
    return list(BACKBONE_REGISTRY)


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
    """Register a third-party backbone (from a plugin module or an entry point's code)."""
    return BACKBONE_REGISTRY.register(spec, replace=replace)


def backbones_taking(option: str) -> list[str]:
    """The names of the registered backbones that accept ``option``."""
    return [s.name for s in BACKBONE_REGISTRY if option in s.options]
