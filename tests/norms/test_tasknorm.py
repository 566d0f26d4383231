"""TaskNorm-I and TaskNorm-L (Bronskill et al., ICML 2020): support moments, per-query blend."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm, norm_phase, task_scope
from fewnorm.norms.tasknorm import TaskNorm2d
from fewnorm.testing import check_normalizer

NAMES = ["tasknorm-i", "tasknorm-l"]
EPS = 1e-5


def _x(n: int, seed: int, c: int = 4, size: int = 5, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=torch.float64) * 1.5 + shift


def _module(name: str) -> TaskNorm2d:
    module = create_norm(name, 4).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([1.5, -0.5, 2.0, 0.7]))
        module.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.4]))
        module.scale.fill_(0.3)
        module.offset.fill_(-1.0)
    return module


def _pop(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of all the values of ``t``."""
    mean = t.sum() / t.numel()
    return mean, ((t - mean) ** 2).sum() / t.numel()


def _reference(module: TaskNorm2d, x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """TaskNorm written out example by example and channel by channel (normalizers.md)."""
    alpha = torch.sigmoid(module.scale * support.shape[0] + module.offset)
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            mu_bn, var_bn = _pop(support[:, c])
            own = x[n, c] if module.moments == "instance" else x[n]
            mu_own, var_own = _pop(own)
            mu = alpha * mu_bn + (1 - alpha) * mu_own
            var_from_bn = var_bn + (mu_bn - mu) ** 2
            var = alpha * var_from_bn + (1 - alpha) * (var_own + (mu_own - mu) ** 2)
            y = (x[n, c] - mu) / torch.sqrt(var + EPS)
            out[n, c] = module.weight[c] * y + module.bias[c]
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("options", [{}, {"eps": 1e-3}])
def test_conforms(name: str, options: dict[str, object]) -> None:
    check_normalizer(name, options=options)


def test_alpha_starts_at_one_half() -> None:
    module = create_norm("tasknorm-i", 4)
    assert module.scale.item() == 0.0
    assert module.offset.item() == 0.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [True, False])
def test_queries_one_at_a_time_equal_queries_in_a_batch(name: str, training: bool) -> None:
    module = _module(name).train(training)
    support, query = _x(5, seed=1), _x(7, seed=2, shift=1.0)
    with task_scope():
        with norm_phase("support"):
            module(support)
        with norm_phase("query"):
            batched = module(query)
            single = torch.cat([module(query[i : i + 1]) for i in range(7)])
            reordered = module(query.flip(0)).flip(0)
    torch.testing.assert_close(single, batched)
    torch.testing.assert_close(reordered, batched)
    # ... and the queries really are normalized with the support set's moments:
    assert not torch.allclose(module(query), batched, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_query_pass_matches_direct_formula(name: str) -> None:
    module = _module(name)
    support, query = _x(5, seed=1), _x(7, seed=2, shift=1.0)
    with task_scope():
        with norm_phase("support"):
            module(support)
        with norm_phase("query"):
            out = module(query)
    # |support| = 5 (not the 7 queries) enters alpha
    torch.testing.assert_close(out, _reference(module, query, support))


@pytest.mark.parametrize("name", NAMES)
def test_support_pass_uses_the_blended_moments(name: str) -> None:
    module = _module(name)
    support = _x(5, seed=1, shift=-0.5)
    with task_scope(), norm_phase("support"):
        out = module(support)
    expected = _reference(module, support, support)
    torch.testing.assert_close(out, expected)
    # not plain batch normalization of the support set
    bn = torch.nn.functional.batch_norm(support, None, None, module.weight, module.bias, True)
    assert not torch.allclose(out, bn, atol=1e-3)
    # without a phase the batch is its own support set
    torch.testing.assert_close(module(support), expected)


@pytest.mark.parametrize("name", NAMES)
def test_query_loss_backpropagates_into_support_and_alpha(name: str) -> None:
    module = _module(name)
    support = _x(5, seed=1).requires_grad_(True)
    query = _x(3, seed=2)
    with task_scope():
        with norm_phase("support"):
            module(support)
        with norm_phase("query"):
            loss = module(query).pow(2).sum()
    grad_support, grad_scale = torch.autograd.grad(loss, [support, module.scale])
    assert grad_support.abs().sum() > 0
    assert grad_scale.abs().sum() > 0


def test_functional_call_parameters_reach_alpha() -> None:
    module = _module("tasknorm-i")
    fast = {k: v.detach().clone() for k, v in module.named_parameters()}
    fast["scale"].fill_(-0.8)
    support, query = _x(5, seed=1), _x(4, seed=2)
    with task_scope():
        with norm_phase("support"):
            functional_call(module, fast, (support,))
        with norm_phase("query"):
            out = functional_call(module, fast, (query,))
    with torch.no_grad():
        module.scale.fill_(-0.8)
    torch.testing.assert_close(out, _reference(module, query, support))


@pytest.mark.parametrize("name", NAMES)
def test_query_without_support_pass_raises(name: str) -> None:
    module = _module(name)
    with task_scope(), norm_phase("support"):
        module(_x(5, seed=1))
    with (
        task_scope(),
        norm_phase("query"),
        pytest.raises(RuntimeError, match="query pass before any support pass"),
    ):
        module(_x(2, seed=2))  # the previous task's moments are gone


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_rejects_non_positive_eps(name: str, eps: float) -> None:
    with pytest.raises(OptionError, match="tasknorm eps must be positive"):
        create_norm(name, 4, eps=eps)
