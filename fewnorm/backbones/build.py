"""``build_backbone``: a registered backbone by name, with a normalizer bound once for every block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fewnorm.backbones.blocks import norm_layer
from fewnorm.backbones.registry import OPTIONS, backbones_taking, get_backbone_spec
from fewnorm.errors import OptionError
from fewnorm.norms.spec import BoundNorm


def build_backbone(
    name: str,
    *,
    in_channels: int,
    norm: str | BoundNorm,
    norm_options: Mapping[str, Any] | None = None,
    hidden: int = OPTIONS["hidden"],
    dropblock: float = OPTIONS["dropblock"],
    dropblock_size: int = OPTIONS["dropblock_size"],
    channels_last: bool = False,
) -> nn.Module:
    """Build the backbone ``name`` (its :class:`~fewnorm.backbones.registry.BackboneSpec`'s factory).

    ``norm`` is a bound normalizer (``get_norm(name).bind(**options)``) or a name with
    ``norm_options``, bound here: either way its options are checked once, not per block.

    ``hidden`` is Conv-4's width (ResNet-12's widths are fixed at 64-160-320-640).
    ``dropblock`` (a drop probability, 0 = off) and ``dropblock_size`` switch on DropBlock
    in ResNet-12's last two blocks; Conv-4 has none. A backbone receives the options its
    spec declares; a non-zero ``dropblock`` for one without it is refused. ``channels_last``
    runs the backbone on NHWC activations (:mod:`fewnorm.backbones.memory_format`).
    """
    spec = get_backbone_spec(name)
    bound = norm_layer(norm, norm_options)
    if dropblock and "dropblock" not in spec.options:
        names = " and ".join(backbones_taking("dropblock"))
        raise OptionError(f"dropblock applies to the {names} backbone only, not {spec.name}")
    given = {"hidden": hidden, "dropblock": dropblock, "dropblock_size": dropblock_size}
    options = {key: value for key, value in given.items() if key in spec.options}
    model: nn.Module = spec.load()(in_channels, norm=bound, channels_last=channels_last, **options)
    return model
