"""NHWC activations: the same function as NCHW, and the whole backbone really on NHWC kernels."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fewnorm.backbones import build_backbone, to_channels_last
from fewnorm.config import resolve_config
from fewnorm.episodes.plan import memory_format
from fewnorm.norms import get_norm, list_norms, vectorized_tasks


@pytest.mark.parametrize("channels", [1, 3])
def test_to_channels_last_keeps_values_and_makes_convs_write_nhwc(channels: int) -> None:
    x = torch.randn(4, channels, 6, 5)  # (N, C, H, W)
    y = to_channels_last(x)
    assert torch.equal(x, y)
    assert y.stride() == (6 * 5 * channels, 1, 5 * channels, channels)
    conv = nn.Conv2d(channels, 8, 3, padding=1)
    # One channel with default strides is read as NCHW: the case the view exists for.
    assert not conv(x).is_contiguous(memory_format=torch.channels_last)
    assert conv(y).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(conv(x), conv(y), atol=1e-6)


def test_to_channels_last_leaves_vectorized_tasks_alone() -> None:
    x = torch.randn(2, 1, 4, 4)
    with vectorized_tasks():
        assert to_channels_last(x).stride() == x.stride()


def _activation_layouts(model: nn.Module, x: Tensor) -> list[bool]:
    """Whether each 4-d output of a conv/norm/ReLU/pool with more than one pixel is NHWC."""
    layouts: list[bool] = []

    def record(_: nn.Module, __: object, out: object) -> None:
        if isinstance(out, Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
            layouts.append(out.is_contiguous(memory_format=torch.channels_last))

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    model(x)
    for hook in hooks:
        hook.remove()
    return layouts


@pytest.mark.parametrize(("backbone", "channels", "size"), [("conv4", 1, 28), ("resnet12", 3, 20)])
def test_backbone_on_nhwc_computes_the_same_function_on_nhwc_kernels(
    backbone: str, channels: int, size: int
) -> None:
    models = []
    for nhwc in (False, True):
        torch.manual_seed(0)
        models.append(
            build_backbone(backbone, in_channels=channels, norm="batchnorm", channels_last=nhwc).double()
        )
    x = torch.randn(6, channels, size, size, dtype=torch.float64)  # (N, C, H, W), default NCHW strides
    outputs = [m(x) for m in models]
    assert torch.allclose(*outputs, rtol=1e-9, atol=1e-12)
    grads = [
        torch.autograd.grad(out.square().sum(), list(m.parameters()))
        for m, out in zip(models, outputs, strict=True)
    ]
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    nchw, nhwc = (_activation_layouts(m, x) for m in models)
    assert all(nhwc) and len(nhwc) > 4  # first block included: the one-channel input case
    assert not any(nchw)


def test_memory_format_follows_the_declaration_unless_told() -> None:
    declared = {spec.name: spec.channels_last for spec in list_norms()}
    assert declared["batchnorm"] and not declared["instancenorm"]  # measured: 1.8x and 1.0x
    for norm, nhwc in (("batchnorm", True), ("instancenorm", False)):
        chosen, why = memory_format(resolve_config(overrides={"norm": norm}), get_norm(norm))
        assert chosen is nhwc and why == get_norm(norm).memory_format_status()[1]
    for norm, flag in (("batchnorm", False), ("instancenorm", True)):  # against the declaration
        chosen, why = memory_format(
            resolve_config(overrides={"norm": norm, "channels_last": flag}), get_norm(norm)
        )
        assert chosen is flag and ("--channels-last" if flag else "--no-channels-last") in why
    for norm, flag in (("batchnorm", True), ("instancenorm", False)):  # as declared: a recorded default
        chosen, why = memory_format(
            resolve_config(overrides={"norm": norm, "channels_last": flag}), get_norm(norm)
        )
        assert chosen is flag and why == get_norm(norm).memory_format_status()[1]
