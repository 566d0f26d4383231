"""EvoNorm-S0 and EvoNorm-B0 (Liu, Brock, Simonyan and Le, NeurIPS 2020)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.norms.evonorm import EvoNormB02d
from fewnorm.testing import check_normalizer


def _randomize(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + 1.0)


def _x(n: int = 4, c: int = 8, size: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64) * 2 + 0.5


def _pop_std(t: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(biased variance + eps) of all the values of ``t``."""
    return torch.sqrt(((t - t.mean()) ** 2).sum() / t.numel() + eps)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("evonorm-s0", {}),
        ("evonorm-s0", {"groups": 4, "eps": 1e-3}),
        ("evonorm-b0", {}),
        ("evonorm-b0", {"momentum": 0.5, "eps": 1e-3}),
    ],
)
def test_conforms(name: str, options: dict[str, object]) -> None:
    check_normalizer(name, options=options)


# -- EvoNorm-S0 ------------------------------------------------------------------------------


def test_s0_matches_direct_formula() -> None:
    module = create_norm("evonorm-s0", 8, groups=2, eps=1e-3).double()
    _randomize(module)
    x = _x()
    expected = torch.empty_like(x)
    for n in range(x.shape[0]):
        for g in range(2):
            block = x[n, 4 * g : 4 * g + 4]  # (C/G, H, W)
            std = _pop_std(block, 1e-3)
            for c in range(4 * g, 4 * g + 4):
                num = x[n, c] * torch.sigmoid(module.v[c] * x[n, c])
                expected[n, c] = num / std * module.weight[c] + module.bias[c]
    torch.testing.assert_close(module(x), expected)


def test_s0_is_per_sample() -> None:
    module = create_norm("evonorm-s0", 8, groups=4).double()
    _randomize(module)
    x = _x()
    other = x.clone()
    other[1:] = other[1:] * 5 - 3  # change every other sample of the batch
    torch.testing.assert_close(module(x)[0], module(other)[0])
    torch.testing.assert_close(module(x)[0:1], module(x[0:1]))


@pytest.mark.parametrize(("channels", "groups"), [(16, 16), (48, 24), (64, 32), (6, 6), (96, 32)])
def test_s0_default_groups_divide_channels(channels: int, groups: int) -> None:
    assert create_norm("evonorm-s0", channels).groups == groups


@pytest.mark.parametrize("groups", [5, 0, -2, 32])
def test_s0_rejects_groups_not_dividing_channels(groups: int) -> None:
    with pytest.raises(OptionError, match="groups must be a positive divisor of the 16 channels"):
        create_norm("evonorm-s0", 16, groups=groups)


# -- EvoNorm-B0 ------------------------------------------------------------------------------


def _b0_expected(module: EvoNormB02d, x: torch.Tensor, batch_var: torch.Tensor) -> torch.Tensor:
    eps = module.eps
    expected = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            local = module.v[c] * x[n, c] + _pop_std(x[n, c], eps)
            den = torch.maximum(torch.sqrt(batch_var[c] + eps).expand_as(local), local)
            expected[n, c] = x[n, c] / den * module.weight[c] + module.bias[c]
    return expected


def test_b0_training_matches_direct_formula() -> None:
    module = create_norm("evonorm-b0", 8, eps=1e-3).double().train()
    _randomize(module)
    x = _x()
    batch_var = torch.stack([_pop_std(x[:, c], 0.0) ** 2 for c in range(8)])
    expected = _b0_expected(module, x, batch_var)
    out = module(x)
    torch.testing.assert_close(out, expected)
    # both branches of the max are taken somewhere, so the test sees each of them
    inst_std = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-3)
    local = module.v[None, :, None, None] * x + inst_std
    batch_std = torch.sqrt(batch_var + 1e-3)[None, :, None, None]
    assert (local > batch_std).any()
    assert (local < batch_std).any()


def test_b0_evaluation_uses_running_variance() -> None:
    module = create_norm("evonorm-b0", 8).double()
    _randomize(module)
    running = torch.linspace(0.5, 4.0, 8, dtype=torch.float64)
    module.running_var.copy_(running)
    module.eval()
    x = _x()
    torch.testing.assert_close(module(x), _b0_expected(module, x, running))
    torch.testing.assert_close(module(x)[0:1], module(x[0:1]))  # per sample at evaluation
    assert torch.equal(module.running_var, running)


def test_b0_buffers_move_only_in_training() -> None:
    module = create_norm("evonorm-b0", 8, momentum=0.25).double()
    x = _x()
    m = x.shape[0] * x.shape[2] * x.shape[3]
    unbiased = x.var(dim=(0, 2, 3), unbiased=False) * m / (m - 1)
    module.train()
    module(x)
    expected = 0.75 * torch.ones(8, dtype=x.dtype) + 0.25 * unbiased
    torch.testing.assert_close(module.running_var, expected)
    after_training = module.running_var.clone()
    module.eval()
    module(x * 3)
    assert torch.equal(module.running_var, after_training)


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_b0_rejects_momentum_outside_unit_interval(momentum: float) -> None:
    with pytest.raises(OptionError, match=r"evonorm-b0 momentum must lie in \[0, 1\]"):
        create_norm("evonorm-b0", 8, momentum=momentum)


@pytest.mark.parametrize("name", ["evonorm-s0", "evonorm-b0"])
@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_rejects_non_positive_eps(name: str, eps: float) -> None:
    with pytest.raises(OptionError, match=f"{name} eps must be positive"):
        create_norm(name, 8, eps=eps)
