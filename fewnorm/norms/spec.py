"""`NormSpec`: the frozen metadata of one registered normalizer, and its option checks."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fewnorm.errors import OptionError
from fewnorm.norms.fewshot import MODES

#: Keywords a ``conv``-kind factory receives from the backbone (never user options).
CONV_GEOMETRY = ("in_channels", "kernel_size", "stride", "padding")

#: The statistics a normalizer may draw on (``NormSpec.statistics``).
STATISTICS = ("batch", "running", "support", "instance", "layer", "group", "weight", "none")


class NormKind(StrEnum):
    """Where a normalizer sits in a conv block; the backbone builder reads it."""

    ACTIVATION = "activation"  # conv -> norm -> act
    CONV = "conv"  # the normalizer owns the conv: norm(conv geometry) -> act
    NORM_ACT = "norm-act"  # conv -> norm-act (the normalizer is the activation too)


@dataclass(frozen=True)
class NormOption:
    """One keyword option of a normalizer factory."""

    name: str
    default: Any
    annotation: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class NormSpec:
    """Everything fewnorm knows about a normalizer without building it.

    ``factory`` is ``factory(num_channels, /, **options) -> nn.Module``, or a
    ``"module:attribute"`` string resolved on first use so that listing
    normalizers never imports torch.
    """

    name: str
    factory: Callable[..., Any] | str = field(repr=False, compare=False)
    summary: str
    paper: str
    kind: NormKind = NormKind.ACTIVATION
    statistics: tuple[str, ...] = ("batch",)
    has_buffers: bool = False
    aliases: tuple[str, ...] = ()
    source: str = "fewnorm"
    phase_aware: bool = False  # reads the support/query phase signal
    conv_bias: bool = False  # whether the preceding conv should keep its bias
    vmap: bool = False  # safe under torch.func.vmap over a meta-batch's tasks (see vmap_status)
    channels_last: bool = False  # backbones run NHWC by default (see memory_format_status)
    #: Few-shot modes its ``mode`` option offers (fewnorm.norms.fewshot.MODES), the factory's
    #: default first; every normalizer with ``batch`` statistics declares them.
    modes: tuple[str, ...] = ()
    #: Buffers (attribute names) that are learned state, accumulated across tasks in the
    #: meta-model (SWBN's whitening matrix); every other buffer is a per-task statistic.
    learned_buffers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.statistics) - set(STATISTICS)
        if unknown:
            raise ValueError(f"{self.name}: unknown statistics {sorted(unknown)}; use {STATISTICS}")
        bad_modes = set(self.modes) - set(MODES)
        if bad_modes:
            raise ValueError(f"{self.name}: unknown few-shot modes {sorted(bad_modes)}; use {MODES}")
        object.__setattr__(self, "kind", NormKind(self.kind))
        object.__setattr__(self, "modes", tuple(self.modes))
        object.__setattr__(self, "learned_buffers", tuple(self.learned_buffers))

    def default_mode(self, algorithm_mode: str | None = None) -> str | None:
        """The few-shot mode a run uses when the user names none (``None``: no modes).

        ``algorithm_mode`` is the algorithm family's preference (the MAML family's
        :data:`~fewnorm.norms.fewshot.MAML_MODE`), taken where this normalizer offers it;
        otherwise the factory's default, the first declared mode.
        """
        if not self.modes:
            return None
        return algorithm_mode if algorithm_mode in self.modes else self.modes[0]

    def vmap_status(self) -> tuple[bool, str]:
        """Whether MAML-family meta-batches with this normalizer run vectorized, and why (not).

        Built-ins declare ``vmap=True`` once their vectorized meta-gradients equal the
        per-task loop's (tests/episodes/test_vectorized.py); a plugin that does not declare
        it runs the per-task loop, since nothing shows that its forward is vmap-safe.
        """
        if self.vmap:
            return True, "vectorized meta-batches (torch.func.vmap over tasks)"
        return False, (
            "per-task loop: not declared vmap-safe (register with vmap=True once "
            "fewnorm.testing.check_normalizer passes its vmap check)"
        )

    def memory_format_status(self) -> tuple[bool, str]:
        """Whether backbones with this normalizer run on NHWC activations by default, and why.

        Built-ins declare ``channels_last=True`` where a Conv-4 training step measured
        faster on NHWC than on NCHW (benchmarks/memory_format.py); either layout computes
        the same function (the conformance kit's ``channels_last`` check), so the choice
        is speed alone, and ``--channels-last/--no-channels-last`` overrides it.
        """
        if self.channels_last:
            return True, "NHWC: measured faster than NCHW with this normalizer"
        return False, "NCHW: not declared faster on NHWC (benchmarks/memory_format.py measures it)"

    def load(self) -> Callable[..., Any]:
        """Return the factory, importing it if it was given as ``"module:attribute"``."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            factory: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            from fewnorm.errors import PluginError

            raise PluginError(
                f"normalizer '{self.name}' ({self.source}): its factory '{self.factory}' cannot be "
                f"loaded ({type(exc).__name__}: {exc}); reinstall or fix the plugin"
            ) from None
        return factory

    def options(self) -> dict[str, NormOption]:
        """The factory's keyword options with their defaults (conv geometry excluded)."""
        params = list(inspect.signature(self.load()).parameters.values())[1:]
        out = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in CONV_GEOMETRY:
                continue
            ann = (
                p.annotation
                if isinstance(p.annotation, str)
                else getattr(p.annotation, "__name__", str(p.annotation))
            )
            out[p.name] = NormOption(p.name, p.default, "" if ann is p.empty else str(ann))
        return out

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Reject unknown options and coerce command-line strings to the default's type."""
        known = self.options()
        checked: dict[str, Any] = {}
        for key, value in options.items():
            if key not in known:
                listing = ", ".join(known) or "none"
                raise OptionError(f"normalizer '{self.name}' has no option '{key}'; its options: {listing}")
            checked[key] = _coerce(self.name, key, value, known[key])
        return checked

    def build(self, num_channels: int, /, **options: Any) -> Any:
        """Check ``options`` and call the factory."""
        geometry = {k: options.pop(k) for k in CONV_GEOMETRY if k in options}
        return self.load()(num_channels, **geometry, **self.check_options(options))

    def bind(self, **options: Any) -> BoundNorm:
        """This normalizer with ``options`` checked once: ``norm_layer(num_channels)`` per layer.

        timm's shape: resolve the name and check the options at the boundary, then pass the
        constructor down, so a backbone of many blocks checks nothing again.
        """
        return BoundNorm(self, self.check_options(options))


@dataclass(frozen=True)
class BoundNorm:
    """A normalizer and its checked options; calling it builds one layer (conv geometry as keywords)."""

    spec: NormSpec
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, num_channels: int, /, **geometry: Any) -> Any:
        return self.spec.load()(num_channels, **geometry, **self.options)


def _target_type(option: NormOption) -> type | None:
    """The scalar type a command-line string should become, from the default or annotation."""
    default = option.default
    if default is not None and default is not inspect.Parameter.empty:
        return type(default)
    for name, typ in (("bool", bool), ("int", int), ("float", float)):
        if name in option.annotation.replace("None", "").split(" | ") or option.annotation == name:
            return typ
    return None


def _coerce(norm: str, key: str, value: Any, option: NormOption) -> Any:
    """Turn a command-line string (``--norm-opt groups=8``) into the option's type."""
    if not isinstance(value, str):
        return value
    if value.lower() == "none" and option.default is None:
        return None
    typ = _target_type(option)
    if typ is None or typ is str:
        return value
    try:
        if typ is bool:
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        return typ(value)
    except ValueError:
        raise OptionError(
            f"normalizer '{norm}': option '{key}' expects {typ.__name__}, got '{value}'"
        ) from None
