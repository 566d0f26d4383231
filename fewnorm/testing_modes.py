"""The conformance kit's few-shot rule: a normalizer with batch statistics declares its modes.

Rule 6 of the normalizer contract (``fewnorm.testing.check_normalizer``, check ``modes``):
a normalizer that keeps batch statistics (its training output mixes the samples of a
batch, or it keeps running statistics in buffers) declares ``NormSpec.modes``
(a subset of :data:`fewnorm.norms.fewshot.MODES`, the factory's default first) and takes a
``mode`` option, and each declared mode behaves as its name says, in evaluation mode:

- ``transductive``: the output ignores the running statistics (every buffer that is not
  learned state may hold anything);
- ``running``: the output uses them, and each sample's output is its own (no batch);
- ``support``: after a support pass, each query's output depends on the support set and
  not on the other queries; a support pass computes what a transductive pass does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fewnorm.norms import NormSpec, norm_phase, task_scope

Build = Callable[..., nn.Module]
Fail = Callable[[str], AssertionError]


def check_modes(spec: NormSpec, build: Build, images: Callable[[int, int], Tensor], fail: Fail) -> None:
    """Raise ``fail(why)`` unless ``spec``'s few-shot modes are declared and behave as named.

    ``build(mode=...)`` makes a float64 module (``mode=None``: the factory's defaults),
    ``images(n, seed)`` a float64 input ``(n, C, H, W)``. ``statistics`` defaults to ``batch``
    in ``register_norm``, so what a normalizer without modes computes decides, not the label.
    """
    if not spec.modes:
        if "batch" not in spec.statistics or not _keeps_batch_statistics(spec, build(mode=None), images):
            return
        raise fail(
            "uses batch statistics but declares no few-shot modes: register it with "
            "modes=(...) from fewnorm.norms.fewshot.MODES and a `mode` option, so that MAML runs "
            "can normalize with transductive or support statistics"
        )
    option = spec.options().get("mode")
    if option is None or option.default != spec.modes[0]:
        found = "no `mode` option" if option is None else f"`mode` defaults to {option.default!r}"
        raise fail(
            f"declares modes {spec.modes}, but its factory has {found}: it needs a `mode` option "
            "whose default is the first declared mode"
        )
    for mode in spec.modes:
        module = build(mode=mode).eval()
        _CHECKS[mode](spec, module, images, fail)


def _keeps_batch_statistics(spec: NormSpec, module: nn.Module, images: Any) -> bool:
    """Whether ``module`` mixes a batch's samples in training, or keeps running statistics."""
    x = images(8, 6)
    with torch.no_grad():
        mixes = not torch.allclose(_alone(module.train(), x)[:3], _alone(module, x[:3]), atol=1e-9)
    return mixes or bool(_statistics(spec, module))


def _statistics(spec: NormSpec, module: nn.Module) -> list[Tensor]:
    """The buffers that hold running statistics (floating, not learned state)."""
    return [
        b
        for name, b in module.named_buffers()
        if b.is_floating_point() and name.rsplit(".", 1)[-1] not in spec.learned_buffers
    ]


@torch.no_grad()
def _perturb(buffers: list[Tensor]) -> None:
    for b in buffers:
        b.mul_(1.7).add_(0.3)


def _alone(module: nn.Module, x: Tensor) -> Tensor:
    with task_scope(), norm_phase("support"):
        out: Tensor = module(x)
    return out


def _transductive(spec: NormSpec, module: nn.Module, images: Any, fail: Fail) -> None:
    x = images(8, 1)
    before = _alone(module, x)
    _perturb(_statistics(spec, module))
    if not torch.allclose(_alone(module, x), before, rtol=1e-9, atol=1e-12):
        raise fail("mode=transductive reads its running statistics in evaluation; it must use the batch's")


def _running(spec: NormSpec, module: nn.Module, images: Any, fail: Fail) -> None:
    x = images(8, 2)
    whole = _alone(module, x)
    if not torch.allclose(_alone(module, x[:3]), whole[:3], rtol=1e-9, atol=1e-12):
        raise fail("mode=running makes a sample's output depend on the rest of the batch in evaluation")
    stats = _statistics(spec, module)
    _perturb(stats)
    if stats and torch.allclose(_alone(module, x), whole, rtol=1e-9, atol=1e-12):
        raise fail("mode=running ignores its running statistics in evaluation")


def _support(spec: NormSpec, module: nn.Module, images: Any, fail: Fail) -> None:
    support, other, query = images(5, 3), images(5, 4), images(7, 5)

    def scored(s: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        with task_scope():
            with norm_phase("support"):
                ys = module(s)
            with norm_phase("query"):
                return ys, module(q)

    ys, yq = scored(support, query)
    transductive = build_like(module, "transductive")
    if transductive is not None and not torch.allclose(ys, _alone(transductive, support), atol=1e-9):
        raise fail("mode=support: a support pass computes other statistics than a transductive pass")
    if not torch.allclose(scored(support, query[:3])[1], yq[:3], rtol=1e-9, atol=1e-12):
        raise fail("mode=support makes a query's output depend on the other queries")
    if torch.allclose(scored(other, query)[1], yq, rtol=1e-9, atol=1e-12):
        raise fail("mode=support: the query's output does not depend on the support set")


def build_like(module: nn.Module, mode: str) -> nn.Module | None:
    """A copy of ``module`` switched to ``mode`` (where the module keeps it as ``.mode``)."""
    import copy

    if not hasattr(module, "mode"):
        return None
    clone = copy.deepcopy(module)
    setattr(clone, "mode", mode)  # noqa: B010 (nn.Module.__setattr__ is typed for tensors and modules)
    return clone


_CHECKS: dict[str, Callable[[NormSpec, nn.Module, Any, Fail], None]] = {
    "transductive": _transductive,
    "running": _running,
    "support": _support,
}
