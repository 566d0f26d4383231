"""RMSNorm over channels (Zhang and Sennrich, NeurIPS 2019)."""

from __future__ import annotations

import pytest
import torch

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.testing import check_normalizer


def _x(n: int = 3, c: int = 6, size: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64) * 3 + 1.0


@pytest.mark.parametrize("options", [{}, {"eps": 1e-3}])
def test_conforms(options: dict[str, object]) -> None:
    check_normalizer("rmsnorm", options=options)


def test_matches_direct_formula() -> None:
    module = create_norm("rmsnorm", 6, eps=1e-3).double()
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-1.0, 2.0, 6))
    x = _x()
    expected = torch.empty_like(x)
    for n in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                a = x[n, :, i, j]  # the C values at one position
                rms = torch.sqrt((a**2).sum() / a.numel() + 1e-3)
                expected[n, :, i, j] = a / rms * module.weight
    torch.testing.assert_close(module(x), expected)


def test_unit_gain_gives_unit_rms_over_channels() -> None:
    module = create_norm("rmsnorm", 6, eps=1e-12).double()
    y = module(_x())
    torch.testing.assert_close(y.pow(2).mean(dim=1), torch.ones(3, 4, 4, dtype=y.dtype))
    assert y.mean(dim=1).abs().max() > 0.1  # no re-centering


@pytest.mark.parametrize("c", [0.01, 5.0, 300.0])
def test_invariant_to_input_scale(c: float) -> None:
    module = create_norm("rmsnorm", 6, eps=1e-14).double()
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-1.0, 2.0, 6))
    x = _x()
    torch.testing.assert_close(module(c * x), module(x))


def test_is_per_sample_and_position() -> None:
    module = create_norm("rmsnorm", 6).double()
    x = _x()
    other = x.clone()
    other[1:] *= 7.0
    other[0, :, 0, 0] *= -3.0
    y, y_other = module(x), module(other)
    torch.testing.assert_close(y_other[0, :, 1:], y[0, :, 1:])
    torch.testing.assert_close(y_other[0, :, 0, 1:], y[0, :, 0, 1:])


@pytest.mark.parametrize("eps", [0.0, -1e-6])
def test_rejects_non_positive_eps(eps: float) -> None:
    with pytest.raises(OptionError, match="rmsnorm eps must be positive"):
        create_norm("rmsnorm", 6, eps=eps)
