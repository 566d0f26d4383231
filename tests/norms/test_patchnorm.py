"""PatchNorm: unfold-based formula, per-sample behaviour, the step property, initialization."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm, get_norm
from fewnorm.norms.patchnorm import PatchNormConv2d
from fewnorm.testing import check_normalizer


@pytest.mark.parametrize("options", [{}, {"variant": "norm", "gain": True}, {"gain": True, "init_gain": 1.0}])
def test_conformance(options: dict[str, Any]) -> None:
    check_normalizer("patchnorm", options=options)


def test_spec() -> None:
    spec = get_norm("patchnorm")
    assert spec.kind.value == "conv"
    assert spec.statistics == ("none",)
    assert not spec.has_buffers
    assert not spec.conv_bias
    assert not spec.phase_aware


def _unfold_reference(layer: PatchNormConv2d, x: Tensor) -> Tensor:
    """The layer's formula, one explicit input patch per output position."""
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    n, _, h, w = x.shape
    h_out, w_out = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    patches = F.unfold(x, k, padding=p, stride=s)  # (N, Cin*k*k, L)
    conv = layer.weight.flatten(1) @ patches  # (N, Cout, L)
    norm = patches.norm(dim=1, keepdim=True)  # (N, 1, L)
    gain = torch.ones_like(layer.bias) if layer.gain is None else layer.gain
    bias, gain = layer.bias[:, None], gain[:, None]  # (Cout, 1)
    c = layer.init_gain
    if layer.variant == "affine":
        z = c * gain * (conv + bias) / torch.sqrt(norm**2 + 1)
    else:
        z = c * gain * conv / (norm + layer.eps) + bias
    return z.reshape(n, -1, h_out, w_out)


@pytest.mark.parametrize("variant", ["affine", "norm"])
def test_matches_unfold_formula(variant: str) -> None:
    torch.manual_seed(0)
    layer = create_norm(
        "patchnorm",
        5,
        in_channels=3,
        kernel_size=3,
        stride=2,
        padding=1,
        variant=variant,
        gain=True,
    ).double()
    with torch.no_grad():
        layer.bias.normal_()
        layer.gain.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 9, 8, dtype=torch.float64)
    x[1, :, :4, :4] = 0  # whole zero patches: the norm variant divides by eps there
    y = layer(x)
    assert y.shape == (4, 5, 5, 4)
    torch.testing.assert_close(y, _unfold_reference(layer, x))


def test_zero_patches_have_finite_second_derivatives() -> None:
    layer = create_norm("patchnorm", 4, in_channels=2, kernel_size=3, padding=1, variant="norm")
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64).relu()
    x[0] = 0
    x.requires_grad_(True)
    layer = layer.double()
    (gx,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    assert torch.isfinite(gx).all()
    assert torch.isfinite(ggx).all()


@pytest.mark.parametrize("variant", ["affine", "norm"])
def test_identical_in_train_and_eval_and_per_sample(variant: str) -> None:
    layer = create_norm("patchnorm", 6, in_channels=3, kernel_size=3, padding=1, variant=variant)
    x = torch.randn(5, 3, 7, 7)
    layer.train()
    y_train = layer(x)
    layer.eval()
    torch.testing.assert_close(layer(x), y_train, rtol=0, atol=0)
    torch.testing.assert_close(layer(x[2:3]), y_train[2:3])
    other = x.clone()
    other[[0, 1, 3, 4]] = torch.randn(4, 3, 7, 7) * 10
    torch.testing.assert_close(layer(other)[2], y_train[2])


def _one_step_change(layer: nn.Module, x: Tensor, g: Tensor, lr: float) -> Tensor:
    """Output change of ``layer`` on ``x`` after one SGD step on ``sum(g * layer(x))``."""
    z = layer(x)
    grads = torch.autograd.grad((g * z).sum(), list(layer.parameters()))
    with torch.no_grad():
        for p, grad in zip(layer.parameters(), grads, strict=True):
            p.sub_(lr * grad)
        return layer(x) - z.detach()


def test_step_moves_output_by_exactly_minus_lr_g() -> None:
    """One output position (kernel = input): PatchNorm steps by -lr*c^2*g (c = init_gain,
    exactly -lr*g for c = 1), a plain conv by -lr*g*(||x||^2 + 1), the norm variant by
    -lr*g*(1 + ||x||^2 / (||x|| + eps)^2)."""
    torch.manual_seed(0)
    lr = 0.1
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64) * 2  # one sample, one position
    g = torch.randn(1, 6, 1, 1, dtype=torch.float64)
    squared = x.pow(2).sum()

    affine = create_norm("patchnorm", 6, in_channels=3, kernel_size=4, init_gain=1.0).double()
    torch.testing.assert_close(_one_step_change(affine, x, g, lr), -lr * g)
    scaled = create_norm("patchnorm", 6, in_channels=3, kernel_size=4).double()  # c = sqrt(48)
    torch.testing.assert_close(_one_step_change(scaled, x, g, lr), -lr * 48 * g)

    plain = nn.Conv2d(3, 6, 4).double()
    torch.testing.assert_close(_one_step_change(plain, x, g, lr), -lr * g * (squared + 1))

    norm = create_norm("patchnorm", 6, in_channels=3, kernel_size=4, variant="norm", init_gain=1.0).double()
    factor = 1 + squared / (squared.sqrt() + norm.eps) ** 2
    torch.testing.assert_close(_one_step_change(norm, x, g, lr), -lr * g * factor)


def _stack(init_gain: float | None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        *[
            nn.Sequential(
                create_norm(
                    "patchnorm",
                    64,
                    in_channels=1 if i == 0 else 64,
                    kernel_size=3,
                    padding=1,
                    init_gain=init_gain,
                ),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            for i in range(4)
        ]
    )


def _block_stds(stack: nn.Sequential, x: Tensor) -> list[float]:
    stds = []
    with torch.no_grad():
        for block in stack:
            x = block(x)
            stds.append(float(x.std()))
    return stds


def test_default_init_keeps_conv4_activation_scale() -> None:
    """Conv-4 (64 channels, 28x28 pixels in [0, 1]): the default init keeps every block's
    activation std near 1; the naive Kaiming init loses a factor ~sqrt(fan_in) and stays there."""
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    careful = _block_stds(_stack(None), x)
    naive = _block_stds(_stack(1.0), x)
    assert all(0.4 < s < 2.5 for s in careful), careful
    assert careful[-1] > 0.5 * careful[0], careful
    assert naive[-1] < 0.1, naive
    assert careful[-1] > 10 * naive[-1], (careful, naive)


def test_default_init_scales_kaiming_by_patch_norm() -> None:
    layer = create_norm("patchnorm", 256, in_channels=64, kernel_size=3)
    assert layer.init_gain == pytest.approx(24.0)  # sqrt(64 * 9)
    assert float(layer.weight.detach().std()) == pytest.approx((2 / 576) ** 0.5, rel=0.02)  # Kaiming


def test_command_line_strings_are_coerced() -> None:
    layer = create_norm(
        "patchnorm",
        4,
        in_channels=2,
        kernel_size=3,
        variant="norm",
        gain="true",
        eps="1e-4",
        init_gain="none",
    )
    assert layer.gain is not None
    assert layer.eps == 1e-4
    assert layer.init_gain == pytest.approx(18**0.5)
    assert create_norm("patchnorm", 4, in_channels=2, kernel_size=3, init_gain="2").init_gain == 2.0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"variant": "l1"}, "variant must be one of affine, norm"),
        ({"eps": 0.0}, "eps must be positive"),
        ({"eps": -1e-5}, "eps must be positive"),
        ({"init_gain": 0.0}, "init_gain must be a positive number"),
        ({"init_gain": -2.0}, "init_gain must be a positive number"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1"),
        ({"groups": 2}, "has no option 'groups'"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    geometry: dict[str, Any] = {"in_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1}
    with pytest.raises(OptionError, match=match):
        create_norm("patchnorm", 8, **{**geometry, **options})
