"""Scaled Weight Standardization: formula, standardized filters, affine invariance, gamma."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm, get_norm
from fewnorm.norms.weightstd import RELU_GAMMA, ScaledWSConv2d
from fewnorm.testing import check_normalizer


@pytest.mark.parametrize("options", [{}, {"gamma": 1.0, "bias": False, "eps": 1e-6}])
def test_conformance(options: dict[str, Any]) -> None:
    check_normalizer("scaled-ws", options=options)


def test_spec_and_aliases() -> None:
    for alias in ("sws", "weightstd", "scaled_ws"):
        assert get_norm(alias).name == "scaled-ws"
    spec = get_norm("scaled-ws")
    assert spec.kind.value == "conv"
    assert spec.statistics == ("weight",)
    assert not spec.has_buffers
    assert not spec.conv_bias


def _layer(**options: Any) -> ScaledWSConv2d:
    torch.manual_seed(0)
    geometry = {"in_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}
    layer = create_norm("scaled-ws", 6, **geometry, **options)
    layer = layer.double()
    with torch.no_grad():
        layer.gain.uniform_(0.5, 2.0)
        if layer.bias is not None:
            layer.bias.normal_()
    return layer


def test_matches_formula() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    filters = layer.weight.reshape(6, -1)  # (Cout, fan_in)
    fan_in = filters.shape[1]
    mean = filters.mean(dim=1, keepdim=True)
    var = ((filters - mean) ** 2).mean(dim=1, keepdim=True)
    standardized = (filters - mean) / torch.sqrt(var + layer.eps)
    w = (layer.gamma * layer.gain[:, None] / math.sqrt(fan_in) * standardized).view_as(layer.weight)
    torch.testing.assert_close(layer(x), F.conv2d(x, w, layer.bias, stride=2, padding=1))


def test_effective_filters_have_zero_mean_and_norm_gamma_gain() -> None:
    layer = _layer()
    w = layer.effective_weight().reshape(6, -1)
    sigma2 = layer.weight.reshape(6, -1).var(dim=1, correction=0)
    zeros = torch.zeros(6, dtype=torch.float64)
    torch.testing.assert_close(w.mean(dim=1), zeros, atol=1e-12, rtol=0)
    exact = layer.gamma * layer.gain * torch.sqrt(sigma2 / (sigma2 + layer.eps))
    torch.testing.assert_close(w.norm(dim=1), exact)
    torch.testing.assert_close(w.norm(dim=1), layer.gamma * layer.gain, rtol=1e-3, atol=0)


@pytest.mark.parametrize(("eps", "tol"), [(1e-12, 1e-9), (1e-4, 2e-3)])
def test_invariant_to_affine_maps_of_each_filter(eps: float, tol: float) -> None:
    layer = _layer(eps=eps)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    before = layer(x)
    a = torch.tensor([0.5, 1.0, 2.0, 0.7, 1.5, 1.1], dtype=torch.float64)[:, None, None, None]
    c = torch.randn(6, 1, 1, 1, dtype=torch.float64) * 3
    with torch.no_grad():
        layer.weight.mul_(a).add_(c)
    torch.testing.assert_close(layer(x), before, rtol=tol, atol=tol)


def test_relu_gamma_keeps_unit_variance_after_relu() -> None:
    """gamma = sqrt(2 / (1 - 1/pi)): relu of unit Gaussians in, unit variance out."""
    assert pytest.approx(1 / math.sqrt((1 - 1 / math.pi) / 2)) == RELU_GAMMA
    torch.manual_seed(0)
    layer = create_norm("scaled-ws", 32, in_channels=64, kernel_size=3)
    x = torch.randn(16, 64, 8, 8).relu()
    with torch.no_grad():
        assert float(layer(x).var()) == pytest.approx(1.0, rel=0.1)
        plain = create_norm("scaled-ws", 32, in_channels=64, kernel_size=3, gamma=1.0)
        assert float(plain(x).var()) == pytest.approx((1 - 1 / math.pi) / 2, rel=0.1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"eps": 0.0}, "eps must be positive"),
        ({"eps": -1e-4}, "eps must be positive"),
        ({"gamma": 0.0}, "gamma must be a positive finite number"),
        ({"gamma": -1.7}, "gamma must be a positive finite number"),
        ({"in_channels": 1, "kernel_size": 1}, "at least 2 weights per filter"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"padding": -2}, "padding must be an integer >= 0"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    geometry: dict[str, Any] = {"in_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1}
    with pytest.raises(OptionError, match=match):
        create_norm("scaled-ws", 8, **{**geometry, **options})
