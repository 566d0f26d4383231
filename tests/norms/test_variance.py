"""Variance Normalization (Lubana, Dick and Tanaka, NeurIPS 2021): scale, never center."""

from __future__ import annotations

import pytest
import torch

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.testing import check_normalizer


def _x(n: int = 6, c: int = 4, size: int = 5, seed: int = 1, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)[None, :c, None, None]
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64) * scales + shift


@pytest.mark.parametrize("options", [{}, {"momentum": 0.3, "eps": 1e-3, "affine": False}])
def test_conforms(options: dict[str, object]) -> None:
    check_normalizer("variancenorm", options=options)


def test_training_matches_direct_formula() -> None:
    module = create_norm("variancenorm", 4, eps=1e-3).double().train()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([1.5, -0.5, 2.0, 0.7]))
        module.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.4]))
    x = _x(shift=2.0)
    expected = torch.empty_like(x)
    for c in range(4):
        values = x[:, c]
        var = ((values - values.mean()) ** 2).sum() / values.numel()  # centered, biased
        expected[:, c] = module.weight[c] * values / torch.sqrt(var + 1e-3) + module.bias[c]
    torch.testing.assert_close(module(x), expected)


def test_mean_is_not_removed() -> None:
    module = create_norm("variancenorm", 4, eps=1e-12).double().train()
    x = _x(shift=3.0)
    y = module(x)
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), unbiased=False)
    # the input's mean survives, divided by the deviation: y's mean is mean(x) / std(x) > 0
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), mean / std)
    assert (y.mean(dim=(0, 2, 3)) > 0.5).all()
    bn = torch.nn.functional.batch_norm(x, None, None, training=True)
    torch.testing.assert_close(bn.mean(dim=(0, 2, 3)), torch.zeros(4, dtype=x.dtype))


def test_output_has_unit_variance_not_unit_second_moment() -> None:
    # decision: the deviation is the centered batch deviation (authors' reference code)
    module = create_norm("variancenorm", 4, eps=1e-12, affine=False).double().train()
    x = _x(shift=3.0)
    y = module(x)
    ones = torch.ones(4, dtype=x.dtype)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), ones)
    second_moment = y.pow(2).mean(dim=(0, 2, 3))
    torch.testing.assert_close(second_moment, ones + y.mean(dim=(0, 2, 3)) ** 2)
    assert (second_moment > 1.5).all()


def test_evaluation_uses_running_variance() -> None:
    module = create_norm("variancenorm", 4, eps=1e-3).double()
    running = torch.tensor([0.25, 1.0, 4.0, 9.0], dtype=torch.float64)
    module.running_var.copy_(running)
    module.eval()
    x = _x(shift=1.0)
    expected = x / torch.sqrt(running + 1e-3)[None, :, None, None]
    torch.testing.assert_close(module(x), expected)
    assert torch.equal(module.running_var, running)


def test_running_variance_moves_only_in_training() -> None:
    module = create_norm("variancenorm", 4, momentum=0.2).double()
    x = _x(shift=2.0)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    unbiased = x.var(dim=(0, 2, 3), unbiased=False) * m / (m - 1)
    module.train()
    module(x)
    torch.testing.assert_close(module.running_var, 0.8 + 0.2 * unbiased)
    trained = module.running_var.clone()
    module.eval()
    module(2 * x)
    assert torch.equal(module.running_var, trained)


@pytest.mark.parametrize("momentum", [-0.01, 1.01])
def test_rejects_momentum_outside_unit_interval(momentum: float) -> None:
    with pytest.raises(OptionError, match=r"variancenorm momentum must lie in \[0, 1\]"):
        create_norm("variancenorm", 4, momentum=momentum)


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_rejects_non_positive_eps(eps: float) -> None:
    with pytest.raises(OptionError, match="variancenorm eps must be positive"):
        create_norm("variancenorm", 4, eps=eps)
