"""The affine-divergence linear layer: its formula and its defining one-step property."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms.affine_divergence import AffineDivergenceLinear, safe_norm


def _layer(variant: str = "affine", **kwargs: Any) -> AffineDivergenceLinear:
    torch.manual_seed(0)
    layer = AffineDivergenceLinear(7, 4, variant=variant, **kwargs).double()
    with torch.no_grad():
        layer.bias.normal_()
    return layer


@pytest.mark.parametrize("variant", ["affine", "norm"])
def test_matches_formula(variant: str) -> None:
    layer = _layer(variant)
    x = torch.randn(3, 5, 7, dtype=torch.float64)  # any leading dims
    x[0, 0] = 0  # a zero input: the norm variant gives the bias there
    w, b = layer.weight, layer.bias
    norm = x.norm(dim=-1, keepdim=True)
    if variant == "affine":
        expected = (x @ w.T + b) / torch.sqrt(norm**2 + 1)
    else:
        expected = x @ w.T / (norm + layer.eps) + b
    torch.testing.assert_close(layer(x), expected)


def _one_step_change(layer: nn.Module, x: Tensor, g: Tensor, lr: float) -> Tensor:
    """Output change of ``layer`` on ``x`` after one SGD step on ``sum(g * layer(x))``."""
    z = layer(x)
    grads = torch.autograd.grad((g * z).sum(), list(layer.parameters()))
    with torch.no_grad():
        for p, grad in zip(layer.parameters(), grads, strict=True):
            p.sub_(lr * grad)
        return layer(x) - z.detach()


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_step_moves_output_by_exactly_minus_lr_g(scale: float) -> None:
    """The defining property, at any input scale; nn.Linear steps by -lr*g*(||x||^2 + 1)."""
    lr = 0.05
    x = torch.randn(1, 7, dtype=torch.float64) * scale
    g = torch.randn(1, 4, dtype=torch.float64)
    torch.testing.assert_close(_one_step_change(_layer(), x, g, lr), -lr * g)
    plain = nn.Linear(7, 4).double()
    squared = x.pow(2).sum()
    torch.testing.assert_close(_one_step_change(plain, x, g, lr), -lr * g * (squared + 1))
    norm = _layer("norm")
    factor = 1 + squared / (squared.sqrt() + norm.eps) ** 2  # ~2 for every sample
    torch.testing.assert_close(_one_step_change(norm, x, g, lr), -lr * g * factor)


def test_batch_step_is_the_unit_vector_kernel() -> None:
    """On a batch, sample n moves by -lr * sum_m g_m <u_n, u_m>, u = [x, 1] / sqrt(||x||^2 + 1):
    the diagonal term is exactly -lr * g_n whatever ||x_n||."""
    lr = 0.05
    x = torch.randn(5, 7, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [3.0], [10.0], [0.0]])
    g = torch.randn(5, 4, dtype=torch.float64)
    u = torch.cat([x, torch.ones(5, 1, dtype=torch.float64)], dim=1)
    u = u / u.norm(dim=1, keepdim=True)  # (N, in + 1), unit rows
    torch.testing.assert_close(_one_step_change(_layer(), x, g, lr), -lr * (u @ u.T) @ g)


def test_default_init_gives_unit_scale_outputs() -> None:
    torch.manual_seed(0)
    layer = AffineDivergenceLinear(256, 512)
    assert float(layer.weight.detach().std()) == pytest.approx(1.0, rel=0.02)
    x = torch.randn(64, 256) * 5
    assert float(layer(x).detach().std()) == pytest.approx(1.0, rel=0.1)
    naive = AffineDivergenceLinear(256, 512, init_gain=1.0)
    assert float(naive.weight.detach().std()) == pytest.approx(1 / 16, rel=0.02)


def test_zero_input_has_finite_second_derivatives() -> None:
    layer = _layer("norm")
    x = torch.zeros(2, 7, dtype=torch.float64)
    x[1] = torch.randn(7, dtype=torch.float64)
    x.requires_grad_(True)
    (gx,) = torch.autograd.grad(layer(x).pow(2).sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    assert torch.isfinite(gx).all()
    assert torch.isfinite(ggx).all()
    assert float(safe_norm(torch.tensor(0.0))) == 0.0
    assert float(safe_norm(torch.tensor(4.0))) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "l2"}, "variant must be one of affine, norm"),
        ({"eps": 0.0}, "eps must be positive"),
        ({"init_gain": 0.0}, "init_gain must be a positive number"),
        ({"in_features": 0}, "in_features must be an integer >= 1"),
        ({"out_features": -3}, "out_features must be an integer >= 1"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"in_features": 7, "out_features": 4, **kwargs}
    with pytest.raises(OptionError, match=match):
        AffineDivergenceLinear(**args)
