"""FRN + TLU (Singh and Krishnan, CVPR 2020): formula, scale invariance, threshold."""

from __future__ import annotations

import pytest
import torch

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.norms.frn import FilterResponseNorm2d
from fewnorm.testing import check_normalizer


def _randomize(module: FilterResponseNorm2d, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (module.weight, module.bias, module.tau):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _x(n: int = 4, c: int = 6, size: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64) * 2 + 0.7


@pytest.mark.parametrize("options", [{}, {"learnable_eps": False, "eps": 1e-3}])
def test_conforms(options: dict[str, object]) -> None:
    check_normalizer("frn", options=options)


@pytest.mark.parametrize("learnable", [True, False])
def test_matches_direct_formula(learnable: bool) -> None:
    module = create_norm("frn", 6, eps=1e-2, learnable_eps=learnable).double()
    _randomize(module)
    if learnable:
        with torch.no_grad():
            module.eps_param.fill_(-0.3)  # used through its absolute value
    eps = 0.3 if learnable else 1e-2
    x = _x()
    expected = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            nu2 = (x[n, c] ** 2).sum() / x[n, c].numel()
            y = module.weight[c] * x[n, c] / torch.sqrt(nu2 + eps) + module.bias[c]
            expected[n, c] = torch.clamp(y, min=module.tau[c])
    torch.testing.assert_close(module(x), expected)


def test_learnable_eps_gets_gradient() -> None:
    module = create_norm("frn", 6, eps=0.1).double()
    module(_x()).sum().backward()
    assert module.eps_param.grad is not None
    assert module.eps_param.grad.abs() > 0


@pytest.mark.parametrize("c", [0.01, 3.0, 250.0])
def test_output_invariant_to_input_scale_when_eps_vanishes(c: float) -> None:
    module = create_norm("frn", 6, eps=1e-14, learnable_eps=False).double()
    _randomize(module)
    x = _x()
    torch.testing.assert_close(module(c * x), module(x))


def test_scale_invariance_breaks_with_large_eps() -> None:
    module = create_norm("frn", 6, eps=1.0, learnable_eps=False).double()
    x = _x()
    assert not torch.allclose(module(0.01 * x), module(x))


def test_tlu_clamps_at_tau() -> None:
    module = create_norm("frn", 6).double()
    with torch.no_grad():
        module.tau.copy_(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
    x = _x()
    z = module(x)
    tau = module.tau[None, :, None, None].expand_as(z)
    assert (z >= tau).all()
    nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
    y = x / torch.sqrt(nu2 + 1e-6)  # gamma = 1, beta = 0
    below = y < tau
    assert below.any()
    assert (~below).any()
    assert torch.equal(z[below], tau[below])
    torch.testing.assert_close(z[~below], y[~below])


def test_per_sample() -> None:
    module = create_norm("frn", 6).double()
    _randomize(module)
    x = _x()
    torch.testing.assert_close(module(x)[2:3], module(x[2:3]))


@pytest.mark.parametrize("eps", [0.0, -1e-6])
def test_rejects_non_positive_eps(eps: float) -> None:
    with pytest.raises(OptionError, match="frn eps must be positive"):
        create_norm("frn", 8, eps=eps)


def test_command_line_strings_are_coerced() -> None:
    module = create_norm("frn", 8, learnable_eps="false", eps="1e-3")
    assert module.eps_param is None
    assert module.eps == 1e-3
