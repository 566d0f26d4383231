"""Public conformance kit: ``check_normalizer(name_or_factory)``, and ``check_algorithm(name)``.

Plugin authors run it in their own test suites::

    from fewnorm.testing import check_normalizer

    def test_my_norm_conforms():
        check_normalizer("mynorm")                      # an installed (entry-point) plugin
        check_normalizer("mynorm", plugin="mynorm.py")  # a --plugin file, loaded first

Each check enforces one rule of the normalizer contract (architecture.md) and
raises :class:`ConformanceError` naming the rule it broke.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.errors import UnknownNameError
from fewnorm.norms import NormKind, NormSpec, get_norm, norm_phase, task_scope
from fewnorm.norms.spec import CONV_GEOMETRY
from fewnorm.testing_algorithm import AlgorithmConformanceError, check_algorithm

__all__ = ["AlgorithmConformanceError", "ConformanceError", "check_algorithm", "check_normalizer"]

CHECKS = (
    "shape",
    "parameters_swappable",
    "buffers_swappable",
    "buffers_only_in_training",
    "second_order",
    "small_batch",
    "float64",
    "state_dict_roundtrip",
    "deepcopy_and_pickle",
    "phases",
    "modes",
    "vmap",
    "channels_last",
)


class ConformanceError(AssertionError):
    """A normalizer broke a rule of the contract; the message names the rule."""


def _fail(rule: str, name: str, why: str) -> ConformanceError:
    return ConformanceError(f"[{rule}] normalizer '{name}': {why}")


def _resolve(name_or_factory: str | NormSpec | Callable[..., nn.Module]) -> NormSpec:
    if isinstance(name_or_factory, NormSpec):
        return name_or_factory
    if isinstance(name_or_factory, str):
        try:
            return get_norm(name_or_factory)
        except UnknownNameError as exc:
            raise UnknownNameError(
                f"{exc} A file plugin registers its names when it is loaded: "
                f"check_normalizer('{name_or_factory}', plugin='path/to/yourplugin.py')."
            ) from None
    return NormSpec(
        name=getattr(name_or_factory, "__name__", "factory"),
        factory=name_or_factory,
        summary="",
        paper="",
        statistics=("none",),
    )


def check_normalizer(
    name_or_factory: str | NormSpec | Callable[..., nn.Module],
    *,
    options: Mapping[str, Any] | None = None,
    channels: int = 16,
    checks: tuple[str, ...] = CHECKS,
    seed: int = 0,
    plugin: str | os.PathLike[str] | None = None,
) -> None:
    """Run the contract checks on a registered name, a :class:`NormSpec` or a bare factory.

    ``plugin`` (a ``FILE.py`` or an importable ``package.module``, as ``fewnorm train
    --plugin`` takes) is loaded first, so a name that a file registers can be checked
    without importing the file by hand; installed (entry-point) plugins need nothing.
    A bare factory is treated as an ``activation``-kind normalizer; pass a
    ``NormSpec`` to check other kinds. Raises :class:`ConformanceError` on the
    first broken rule.
    """
    if plugin is not None:
        from fewnorm.norms import load_plugin

        load_plugin(os.fspath(plugin))
    spec = _resolve(name_or_factory)
    kit = _Kit(spec, dict(options or {}), channels, seed)
    for check in checks:
        if check not in CHECKS:
            raise ValueError(f"unknown check '{check}'; known: {', '.join(CHECKS)}")
        getattr(kit, check)()


class _Kit:
    def __init__(self, spec: NormSpec, options: dict[str, Any], channels: int, seed: int) -> None:
        self.spec, self.options, self.channels, self.seed = spec, options, channels, seed
        self.in_channels = channels // 2 if spec.kind is NormKind.CONV else channels

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        torch.manual_seed(self.seed)
        kwargs = dict(self.options)
        if self.spec.kind is NormKind.CONV:
            geometry = dict(zip(CONV_GEOMETRY, (self.in_channels, 3, 1, 1), strict=True))
            kwargs.update(geometry)
        module = self.spec.build(self.channels, **kwargs)
        if not isinstance(module, nn.Module):
            raise _fail("shape", self.spec.name, f"factory returned {type(module).__name__}")
        return module.to(dtype)

    def input(self, n: int = 8, dtype: torch.dtype = torch.float32, size: int = 6) -> Tensor:
        g = torch.Generator().manual_seed(self.seed + n)
        return (torch.randn(n, self.in_channels, size, size, generator=g) * 2 + 0.5).to(dtype)

    def run(self, module: nn.Module, x: Tensor) -> Tensor:
        with task_scope(), norm_phase("support"):
            out: Tensor = module(x)
            return out

    # -- rules ---------------------------------------------------------------------------

    def shape(self) -> None:
        """Rule 1: forward(x) alone, same (N, C, H, W) shape out, in train and eval."""
        module, x = self.build(), self.input()
        for training in (True, False):
            module.train(training)
            y = module(x)  # no phase: plain forward must work
            if y.shape != (x.shape[0], self.channels, *x.shape[2:]):
                raise _fail("shape", self.spec.name, f"{tuple(x.shape)} -> {tuple(y.shape)}")
            if not torch.isfinite(y).all():
                raise _fail("shape", self.spec.name, "non-finite output")

    def parameters_swappable(self) -> None:
        """Rule 2: every parameter is read in forward (functional_call swaps reach it)."""
        module, x = self.build(), self.input()
        for sub in module.modules():
            for key, value in vars(sub).items():
                if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                    raise _fail(
                        "parameters_swappable",
                        self.spec.name,
                        f"plain tensor attribute '{key}': register it as a buffer",
                    )
        params = {k: v.detach().clone().requires_grad_(True) for k, v in module.named_parameters()}
        buffers = {k: v.clone() for k, v in module.named_buffers()}
        y = functional_call(module, (params, buffers), (x,))
        if not params:
            return
        grads: tuple[Tensor | None, ...] = (None,) * len(params)
        if y.requires_grad:
            grads = torch.autograd.grad(y.pow(2).sum(), list(params.values()), allow_unused=True)
        for (key, _), g in zip(params.items(), grads, strict=True):
            if g is None:
                raise _fail(
                    "parameters_swappable",
                    self.spec.name,
                    f"parameter '{key}' is not read in forward under functional_call "
                    "(state derived from it cached in __init__?)",
                )

    def buffers_swappable(self) -> None:
        """Rule 2: buffers passed through functional_call are the ones updated and read."""
        module, x = self.build(), self.input()
        module.train()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        swapped = {k: v.clone() for k, v in module.named_buffers()}
        params: dict[str, Tensor] = dict(module.named_parameters())
        with torch.no_grad():
            functional_call(module, (params, swapped), (x,))
        for key, value in module.state_dict().items():
            if not torch.equal(value, before[key]):
                raise _fail(
                    "buffers_swappable",
                    self.spec.name,
                    f"'{key}' of the module changed although buffers were swapped in",
                )

    def buffers_only_in_training(self) -> None:
        """Rule 3: evaluation-mode forwards never change buffers."""
        module, x = self.build(), self.input()
        module.train()
        self.run(module, x)
        module.eval()
        before = {k: v.clone() for k, v in module.named_buffers()}
        with torch.no_grad():
            self.run(module, x)
            module(x)
        for key, value in module.named_buffers():
            if not torch.equal(value, before[key]):
                raise _fail(
                    "buffers_only_in_training",
                    self.spec.name,
                    f"buffer '{key}' changed in evaluation mode",
                )
        if any(p.requires_grad for _, p in module.named_buffers()):
            raise _fail("buffers_only_in_training", self.spec.name, "a buffer requires grad")

    def second_order(self) -> None:
        """Rule 4: twice differentiable (second-order MAML), in float64."""
        module, x = self.build(torch.float64), self.input(dtype=torch.float64)
        x.requires_grad_(True)
        params = [p for p in module.parameters() if p.requires_grad]
        y = self.run(module, x)
        target = torch.randn_like(y)
        first = torch.autograd.grad((y * target).sum(), [x, *params], create_graph=True)
        penalty = sum(g.pow(2).sum() for g in first)
        if not isinstance(penalty, Tensor) or not penalty.requires_grad:
            return  # linear in everything (the identity): second derivatives are zero
        second = torch.autograd.grad(penalty, [x, *params], allow_unused=True)
        if not all(torch.isfinite(g).all() for g in second if g is not None):
            raise _fail("second_order", self.spec.name, "non-finite second derivatives")

    def small_batch(self) -> None:
        """Rule 5: a 5-way 1-shot support set (5 images), and single images, without NaN."""
        module = self.build()
        for n, size in ((5, 6), (1, 3)):
            x = self.input(n, size=size)
            for training in (True, False):
                module.train(training)
                y = self.run(module, x)
                if not torch.isfinite(y).all():
                    raise _fail(
                        "small_batch",
                        self.spec.name,
                        f"non-finite output for {n} image(s), training={training}",
                    )
                loss = y.pow(2).mean()
                if training and loss.requires_grad:
                    grads = torch.autograd.grad(loss, list(module.parameters()), allow_unused=True)
                    if not all(torch.isfinite(g).all() for g in grads if g is not None):
                        raise _fail("small_batch", self.spec.name, f"non-finite grads for {n} images")

    def float64(self) -> None:
        """Rule 5: works in float64 and keeps the dtype."""
        module, x = self.build(torch.float64), self.input(dtype=torch.float64)
        for training in (True, False):
            module.train(training)
            if self.run(module, x).dtype != torch.float64:
                raise _fail("float64", self.spec.name, "float64 input gave another dtype")

    def state_dict_roundtrip(self) -> None:
        """Rule 5: a fresh instance loaded from state_dict computes the same function."""
        module, x = self.build(), self.input()
        module.train()
        self.run(module, x)  # move the buffers away from their initial values
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        fresh = self.build()
        buffer.seek(0)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        module.eval()
        fresh.eval()
        if not torch.allclose(self.run(module, x), self.run(fresh, x), atol=1e-6):
            raise _fail("state_dict_roundtrip", self.spec.name, "reloaded module differs")

    def deepcopy_and_pickle(self) -> None:
        """Rule 5: deepcopy and pickle give independent modules computing the same function."""
        module, x = self.build(), self.input()
        module.eval()
        expected = self.run(module, x)
        for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
            clone.eval()
            if not torch.allclose(self.run(clone, x), expected, atol=1e-6):
                raise _fail("deepcopy_and_pickle", self.spec.name, "copy computes another function")
        moved = copy.deepcopy(module).to("cpu")
        if not torch.allclose(self.run(moved, x), expected, atol=1e-6):
            raise _fail("deepcopy_and_pickle", self.spec.name, ".to('cpu') changed the function")

    def phases(self) -> None:
        """The support/query phase signal: a support pass then a query pass within one task."""
        module = self.build()
        support, query = self.input(5), self.input(7)
        for training in (True, False):
            module.train(training)
            with task_scope():
                with norm_phase("support"):
                    module(support)
                with norm_phase("query"):
                    y = module(query)
            if y.shape[0] != 7 or not torch.isfinite(y).all():
                raise _fail("phases", self.spec.name, "query pass after support pass failed")

    def modes(self) -> None:
        """Rule 6: batch statistics come with declared few-shot modes that behave as named."""
        from fewnorm.testing_modes import check_modes

        def build(mode: str | None) -> nn.Module:
            saved = self.options
            self.options = self.options if mode is None else {**self.options, "mode": mode}
            try:
                return self.build(torch.float64)
            finally:
                self.options = saved

        def images(n: int, seed: int) -> Tensor:
            g = torch.Generator().manual_seed(self.seed + 100 * seed + n)
            return torch.randn(n, self.in_channels, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5

        check_modes(self.spec, build, images, lambda why: _fail("modes", self.spec.name, why))

    def vmap(self) -> None:
        """Declared ``vmap=True``: vectorized MAML meta-gradients equal the per-task loop's (float64)."""
        if not self.spec.vmap:
            return  # such normalizers run the per-task loop
        from fewnorm.testing_vmap import vmap_mismatch

        key = vmap_mismatch(self.build(torch.float64), self.in_channels, self.channels, self.seed)
        if key is not None:
            raise _fail(
                "vmap",
                self.spec.name,
                f"vectorized meta-gradient of '{key}' differs from the per-task loop's; "
                "register without vmap=True (or avoid fused norm kernels under in_vectorized_tasks())",
            )

    def channels_last(self) -> None:
        """Any memory layout: NHWC input gives the NCHW output and input gradient (float64).

        Backbones may run on NHWC activations (``--channels-last``), so a normalizer must
        not read its input's strides (``view`` where ``reshape`` is meant, raw pointers).
        """
        for training in (True, False):
            outputs = []
            for layout in (torch.contiguous_format, torch.channels_last):
                module = self.build(torch.float64).train(training)
                x = self.input(dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
                try:
                    y = self.run(module, x)
                except RuntimeError as exc:
                    raise _fail("channels_last", self.spec.name, f"NHWC input failed: {exc}") from exc
                (grad,) = torch.autograd.grad(y.square().sum(), x)
                outputs.append((y, grad))
            (y, gy), (z, gz) = outputs
            close = [torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in ((y, z), (gy, gz))]
            if not all(close):
                mode = "training" if training else "evaluation"
                raise _fail("channels_last", self.spec.name, f"NHWC input changes the output in {mode}")
