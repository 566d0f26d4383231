"""BatchNorm modes: which moments normalize the query set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewnorm.norms import create_norm, norm_phase, task_scope


def _batch(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, 5, 5, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _standardize(x: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = ref.mean(dim=(0, 2, 3), keepdim=True)
    var = ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


@pytest.mark.parametrize("training", [True, False])
def test_transductive_uses_the_batch_passed(training: bool) -> None:
    bn = create_norm("batchnorm", 4, mode="transductive").train(training)
    x = _batch(6, 0)
    torch.testing.assert_close(bn(x), _standardize(x, x))


def test_transductive_eval_leaves_buffers_and_depends_on_other_queries() -> None:
    bn = create_norm("batchnorm", 4, mode="transductive").eval()
    x = _batch(6, 0)
    alone = bn(x[:1])
    together = bn(x)[:1]
    assert not torch.allclose(alone, together)
    assert torch.equal(bn.running_mean, torch.zeros(4))


def test_running_mode_matches_torch_batchnorm() -> None:
    ours = create_norm("batchnorm", 4, mode="running")
    ref = torch.nn.BatchNorm2d(4)
    for seed in range(3):
        x = _batch(6, seed)
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    x = _batch(2, 9)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("training", [True, False])
def test_support_mode_normalizes_query_with_support_moments(training: bool) -> None:
    bn = create_norm("batchnorm", 4, mode="support").train(training)
    support, query = _batch(5, 1), _batch(8, 2)
    with task_scope():
        with norm_phase("support"):
            out_s = bn(support)
        with norm_phase("query"):
            out_q = bn(query)
            one_at_a_time = torch.cat([bn(q[None]) for q in query])
    torch.testing.assert_close(out_s, _standardize(support, support))
    torch.testing.assert_close(out_q, _standardize(query, support))
    torch.testing.assert_close(one_at_a_time, out_q)


def test_support_mode_query_without_support_is_an_error() -> None:
    bn = create_norm("batchnorm", 4, mode="support")
    with task_scope(), norm_phase("query"), pytest.raises(RuntimeError, match="before any support"):
        bn(_batch(3, 0))


def test_support_moments_are_differentiable() -> None:
    bn = create_norm("batchnorm", 4, mode="support")
    support = _batch(5, 1).requires_grad_(True)
    with task_scope():
        with norm_phase("support"):
            bn(support)
        with norm_phase("query"):
            out = bn(_batch(3, 2))
    (grad,) = torch.autograd.grad(out.sum() + 0 * F.relu(out).sum(), support)
    assert grad.abs().sum() > 0
