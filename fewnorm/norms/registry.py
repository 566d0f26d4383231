"""The normalizer registry: one name -> one factory, plugins discovered lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fewnorm.norms.spec import NormKind, NormSpec
from fewnorm.registry import NameTakenError, Registry

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "REGISTRY",
    "NameTakenError",
    "NormRegistry",
    "create_norm",
    "get_norm",
    "list_norms",
    "register_norm",
]


class NormRegistry(Registry[NormSpec]):
    """Normalizer specs by normalized name and alias (:class:`fewnorm.registry.Registry`).

    Built-ins are registered on construction of the global registry; entry-point
    plugins are discovered the first time a name is looked up or listed, by the
    ``discoverer`` injected at construction (``fewnorm.norms`` gives the global registry
    :func:`fewnorm.norms.plugins.load_entry_points`); without one there is nothing to discover.
    """

    def __init__(self, discoverer: Callable[[Any], None] | None = None) -> None:
        super().__init__("normalizer", discoverer)


REGISTRY = NormRegistry()


def register_norm(
    name: str,
    *,
    summary: str,
    paper: str,
    kind: NormKind | str = NormKind.ACTIVATION,
    statistics: tuple[str, ...] = ("batch",),
    has_buffers: bool = False,
    aliases: tuple[str, ...] = (),
    phase_aware: bool = False,
    conv_bias: bool = False,
    vmap: bool = False,
    modes: tuple[str, ...] = (),
    learned_buffers: tuple[str, ...] = (),
    replace: bool = False,
    registry: NormRegistry | None = None,
) -> Callable[[F], F]:
    """Decorator registering ``factory(num_channels, /, **options) -> nn.Module`` under ``name``.

    The factory's keyword options become ``--norm-opt key=value`` (typed by their defaults;
    annotate a string option as ``Literal["a", "b"]`` to have ``fewnorm norms show`` list its
    values). Example::

        @register_norm("mynorm", summary="...", paper="Me et al. 2026", statistics=("instance",))
        def mynorm(num_channels: int, /, eps: float = 1e-5) -> nn.Module: ...

    Args:
        name: the name users type (``--norm mynorm``); case, ``_``, ``-`` and spaces ignored.
        summary: one line for ``fewnorm norms``.
        paper: the reference, shown by ``fewnorm norms show``.
        kind: where the layer sits: ``"activation"`` (conv -> norm -> ReLU; the default),
            ``"conv"`` (the factory owns its convolution and also receives ``in_channels``,
            ``kernel_size``, ``stride``, ``padding``) or ``"norm-act"`` (conv -> norm, the
            layer is the activation too: no ReLU is added).
        statistics: what its moments are computed over: any of ``batch``, ``running``,
            ``support``, ``instance``, ``layer``, ``group``, ``weight``, ``none``. ``batch``
            mixes the samples of a batch (transductive), ``running`` keeps estimates across
            batches. Shown by ``fewnorm norms``; a normalizer whose output mixes the samples
            of a batch must declare ``modes`` (the kit's ``modes`` check).
        has_buffers: whether the module keeps buffers (running moments, whitening matrices).
            Descriptive (``fewnorm norms show``): MAML copies whatever buffers a module has for
            each task, and the conformance kit checks them either way.
        aliases: other names for it.
        phase_aware: whether the layer reads the support/query phase signal (``norm_phase``
            inside ``task_scope``), as ``support``-mode BatchNorm and TaskNorm do.
            Descriptive (``fewnorm norms show --json``); the kit's ``phases`` check runs a
            support and a query pass for every normalizer.
        conv_bias: keep the preceding convolution's bias (off by default: a normalizer that
            subtracts a mean makes it redundant).
        modes: the few-shot modes its ``mode`` option offers (``transductive``, ``running``,
            ``support``; the factory's default first): required of a normalizer with batch
            statistics, each checked by the kit's ``modes`` check (``docs/normalizers.md``).
        learned_buffers: attribute names of buffers that are learned state rather than
            statistics (SWBN's ``whitening_matrix``): MAML's default ``by_role`` policy
            writes them back to the meta-model after each step and keeps the rest per task.
        vmap: the forward is safe under ``torch.func.vmap`` over a MAML meta-batch's tasks;
            declare it once the kit's ``vmap`` check passes. Undeclared, meta-batches run the
            per-task loop (same results, slower on GPUs).
        replace: replace a normalizer of the same name instead of refusing it.
        registry: the registry to add to (default: the global one).
    """

    def decorate(factory: F) -> F:
        spec = NormSpec(
            name=name,
            factory=factory,
            summary=summary,
            paper=paper,
            kind=NormKind(kind),
            statistics=tuple(statistics),
            has_buffers=has_buffers,
            aliases=tuple(aliases),
            phase_aware=phase_aware,
            conv_bias=conv_bias,
            vmap=vmap,
            modes=tuple(modes),
            learned_buffers=tuple(learned_buffers),
        )
        (registry or REGISTRY).register(spec, replace=replace)
        return factory

    return decorate


def get_norm(name: str) -> NormSpec:
    """The :class:`NormSpec` registered under ``name`` (or an alias)."""
    return REGISTRY.get(name)


def create_norm(name: str, num_channels: int, /, **options: Any) -> Any:
    """Build normalizer ``name`` for ``num_channels``: ``create_norm("groupnorm", 64, groups=8)``."""
    return REGISTRY.get(name).build(num_channels, **options)


def list_norms() -> list[NormSpec]:
    """Every registered normalizer, built-ins first, each group sorted by name."""
    return list(REGISTRY)
