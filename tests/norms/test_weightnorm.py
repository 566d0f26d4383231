"""Weight Normalization: formula, scale invariance of v, gradients to v and g."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm, get_norm
from fewnorm.norms.weightnorm import WeightNormConv2d
from fewnorm.testing import check_normalizer


@pytest.mark.parametrize("options", [{}, {"bias": False, "eps": 1e-6}])
def test_conformance(options: dict[str, Any]) -> None:
    check_normalizer("weightnorm", options=options)


def test_spec_and_alias() -> None:
    spec = get_norm("wn")
    assert spec.name == "weightnorm"
    assert spec.kind.value == "conv"
    assert spec.statistics == ("weight",)
    assert not spec.has_buffers
    assert not spec.conv_bias


def _layer(**options: Any) -> WeightNormConv2d:
    torch.manual_seed(0)
    geometry = {"in_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}
    layer = create_norm("weightnorm", 6, **geometry, **options)
    layer = layer.double()
    with torch.no_grad():
        layer.g.uniform_(0.5, 2.0)
        if layer.bias is not None:
            layer.bias.normal_()
    return layer


def test_matches_formula() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    v = layer.v
    filters = v.reshape(6, -1)
    w = (layer.g[:, None] * filters / (filters.norm(dim=1, keepdim=True) + layer.eps)).view_as(v)
    torch.testing.assert_close(layer(x), F.conv2d(x, w, layer.bias, stride=2, padding=1))
    assert layer(x).shape == (2, 6, 4, 4)


def test_starts_as_the_plain_conv_with_v() -> None:
    torch.manual_seed(0)
    layer = create_norm("weightnorm", 6, in_channels=3, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.v, layer.bias, padding=1))
    fan_in = 3 * 9
    assert float(layer.v.detach().pow(2).mean()) == pytest.approx(2 / fan_in, rel=0.2)


def test_invariant_to_rescaling_each_filter() -> None:
    layer = _layer(eps=1e-12)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.v.mul_(torch.logspace(-2, 2, 6, dtype=torch.float64)[:, None, None, None])
    torch.testing.assert_close(layer(x), before, rtol=1e-9, atol=1e-9)


def test_gradients_reach_v_and_g_and_are_orthogonal_to_v() -> None:
    layer = _layer(eps=1e-12)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    loss = (layer(x) * torch.randn(2, 6, 4, 4, dtype=torch.float64)).sum()
    grad_v, grad_g = torch.autograd.grad(loss, [layer.v, layer.g])
    assert grad_v.abs().sum() > 0
    assert grad_g.abs().sum() > 0
    radial = (grad_v * layer.v).sum(dim=(1, 2, 3))  # (Cout,): <dL/dv, v> per filter
    torch.testing.assert_close(radial, torch.zeros(6, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"eps": 0.0}, "eps must be positive"),
        ({"eps": -1.0}, "eps must be positive"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1"),
        ({"gain": 2.0}, "has no option 'gain'"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    geometry: dict[str, Any] = {"in_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1}
    with pytest.raises(OptionError, match=match):
        create_norm("weightnorm", 8, **{**geometry, **options})
