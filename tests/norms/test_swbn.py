"""SWBN: conformance, the whitening step against its formula, convergence of W S W^T to I."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.norms.swbn import StochasticWhiteningBatchNorm2d, swbn
from fewnorm.testing import check_normalizer

CG = 8
EPS = 1e-5


def _mixing(cg: int = CG) -> Tensor:
    """A fixed symmetric mixing matrix with singular values 1 .. 0.3 (correlation cond ~ 8)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(cg, cg, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(1.0, 0.3, cg, dtype=torch.float64)) @ q.T


def _batch(mixing: Tensor, g: torch.Generator, n: int = 16, hw: int = 4) -> Tensor:
    """``x = A z + 1.5`` with ``z`` standard normal: a correlated input ``(n, Cg, hw, hw)``."""
    z = torch.randn(n, mixing.shape[0], hw, hw, generator=g, dtype=torch.float64)
    return torch.einsum("ij,njhw->nihw", mixing, z) + 1.5


def _standardize(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return (x - mean[None, :, None, None]) / (var[None, :, None, None] + EPS).sqrt()


def _correlation(x: Tensor) -> Tensor:
    """The correlation SWBN whitens against, computed directly for one group ``(Cg, Cg)``."""
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    cols = _standardize(x, mean, var).transpose(0, 1).reshape(x.shape[1], -1)  # (Cg, m)
    return cols @ cols.T / cols.shape[1] + torch.diag(EPS / (var + EPS))


def _residual(w: Tensor, s: Tensor) -> float:
    return float(torch.linalg.matrix_norm(w @ s @ w.T - torch.eye(s.shape[0], dtype=s.dtype)))


def _train(module: StochasticWhiteningBatchNorm2d, x: Tensor, s: Tensor, steps: int) -> list[float]:
    residuals = []
    with torch.no_grad():
        for _ in range(steps):
            module(x)
            residuals.append(_residual(module.whitening_matrix[0], s))
    return residuals


def _randomize_affine(module: StochasticWhiteningBatchNorm2d) -> tuple[Tensor, Tensor]:
    gamma, beta = module.weight, module.bias
    assert gamma is not None and beta is not None
    with torch.no_grad():
        gamma.uniform_(0.5, 1.5)
        beta.normal_()
    return gamma, beta


# -- conformance -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"criterion": "fro", "group_size": 4, "whitening_lr": 1e-2, "affine": False}],
)
def test_conforms(options: dict[str, object]) -> None:
    check_normalizer("swbn", options=options)


def test_group_size_default_is_halved_until_it_divides() -> None:
    assert swbn(24).group_size == 8
    assert swbn(64).group_size == 16
    assert swbn(6).group_size == 6
    assert swbn(64, group_size=32).whitening_matrix.shape == (2, 32, 32)


# -- the whitening step and the output against their formulas --------------------------------


@pytest.mark.parametrize("criterion", ["kl", "fro"])
def test_training_step_and_output_match_the_formulas(criterion: str) -> None:
    torch.manual_seed(0)
    module = swbn(8, criterion=criterion, whitening_lr=0.05, group_size=4).double()
    with torch.no_grad():
        w0 = torch.eye(4, dtype=torch.float64) + 0.1 * torch.randn(2, 4, 4, dtype=torch.float64)
        module.whitening_matrix.copy_((w0 + w0.transpose(1, 2)) / 2)
    gamma, beta = _randomize_affine(module)
    w0 = module.whitening_matrix.clone()
    x = torch.randn(6, 8, 3, 3, dtype=torch.float64).requires_grad_(True)
    y = module(x)

    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    xs = _standardize(x, mean, var)
    eye = torch.eye(4, dtype=torch.float64)
    expected_w = []
    for g in range(2):
        s = _correlation(x.detach()[:, 4 * g : 4 * g + 4])
        w = w0[g]
        r = w @ s @ w.T - eye
        step = r @ w if criterion == "kl" else r @ w @ s / torch.linalg.matrix_norm(r)
        new = w - 0.05 * step
        expected_w.append((new + new.T) / 2)
    w1 = torch.block_diag(*expected_w)  # (C, C): the updated W, one block per group
    torch.testing.assert_close(module.whitening_matrix, torch.stack(expected_w))
    expected = torch.einsum("ij,njhw->nihw", w1, xs)
    expected = expected * gamma[None, :, None, None] + beta[None, :, None, None]
    torch.testing.assert_close(y, expected)
    # W is a constant in backward: the gradients are those of the formula with W1 fixed
    target = torch.randn_like(y)
    got = torch.autograd.grad((y * target).sum(), [x, gamma])
    want = torch.autograd.grad((expected * target).sum(), [x, gamma])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_running_moments_use_momentum() -> None:
    module = swbn(8, momentum=0.05).double()
    x = torch.randn(5, 8, 2, 2, dtype=torch.float64) * 3 + 1
    module(x)
    m = 5 * 2 * 2
    torch.testing.assert_close(module.running_mean, 0.05 * x.mean(dim=(0, 2, 3)))
    var = x.var(dim=(0, 2, 3), unbiased=False) * m / (m - 1)
    torch.testing.assert_close(module.running_var, 0.95 + 0.05 * var)


def test_eval_standardizes_with_running_moments_and_never_moves_w() -> None:
    torch.manual_seed(1)
    module = swbn(8, group_size=4, whitening_lr=0.05).double()
    for _ in range(3):
        module(torch.randn(10, 8, 3, 3, dtype=torch.float64) * 2 + 0.5)
    gamma, beta = _randomize_affine(module)
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    y = module(x)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
    w = torch.block_diag(*module.whitening_matrix)  # (C, C)
    xs = _standardize(x, module.running_mean, module.running_var)
    expected = torch.einsum("ij,njhw->nihw", w, xs)
    expected = expected * gamma[None, :, None, None] + beta[None, :, None, None]
    torch.testing.assert_close(y, expected)
    assert not torch.equal(module.whitening_matrix[0], torch.eye(4, dtype=torch.float64))


def test_several_training_passes_before_one_backward() -> None:
    """MAML's inner loop: the graph of an earlier pass must not hold the in-place-updated W."""
    module = swbn(8, whitening_lr=0.1).double()
    x = torch.randn(5, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    loss = module(x).pow(2).sum() + module(2 * x).pow(3).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# -- defining property: repeated training passes drive W S W^T to I ---------------------------


def test_kl_converges_on_a_fixed_batch() -> None:
    x = _batch(_mixing(), torch.Generator().manual_seed(1))
    module = StochasticWhiteningBatchNorm2d(CG, group_size=CG, criterion="kl", whitening_lr=0.1).double()
    residuals = _train(module, x, _correlation(x), 150)
    assert residuals[0] > 1.0
    assert residuals[-1] < 1e-6 * residuals[0]


def test_kl_whitens_the_population_from_fresh_batches() -> None:
    mixing = _mixing()
    cov = mixing @ mixing.T
    d = cov.diagonal().rsqrt()
    population = d[:, None] * cov * d[None, :]  # the correlation of x = A z
    module = StochasticWhiteningBatchNorm2d(CG, group_size=CG, criterion="kl", whitening_lr=0.05).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(200):
            module(_batch(mixing, g, n=32))
    start = _residual(torch.eye(CG, dtype=torch.float64), population)
    assert _residual(module.whitening_matrix[0], population) < start / 10


def test_fro_settles_within_order_alpha() -> None:
    x = _batch(_mixing(), torch.Generator().manual_seed(1))
    s = _correlation(x)
    plateaus = []
    for alpha, steps in ((0.1, 200), (0.05, 300)):
        module = StochasticWhiteningBatchNorm2d(CG, group_size=CG, criterion="fro", whitening_lr=alpha)
        residuals = _train(module.double(), x, s, steps)
        plateau = max(residuals[-50:])
        assert residuals[0] > 1.0
        assert plateau < 6 * alpha
        plateaus.append(plateau)
    assert 1.4 < plateaus[0] / plateaus[1] < 2.8  # the residual it settles at scales with alpha


# -- rank-deficient correlation ---------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["kl", "fro"])
def test_finite_with_rank_deficient_correlation(criterion: str) -> None:
    """5-image supports at 1x1 resolution with 32-channel groups: rank(S) <= 4, for 300 steps."""
    module = swbn(32, criterion=criterion, group_size=32, whitening_lr=0.05)
    g = torch.Generator().manual_seed(3)
    dead = torch.ones(32)
    dead[7] = 0.0  # one channel is constant: a direction that is null in every batch
    with torch.no_grad():
        for _ in range(300):
            module(torch.randn(5, 32, 1, 1, generator=g) * dead[None, :, None, None])
    w = module.whitening_matrix
    assert torch.isfinite(w).all()
    assert torch.linalg.matrix_norm(w, ord=2).max() < 1e3
    y = module(torch.randn(5, 32, 1, 1, generator=g))
    y.sum().backward()
    module.eval()
    assert torch.isfinite(y).all() and torch.isfinite(module(torch.randn(1, 32, 1, 1))).all()


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"criterion": "l2"}, "criterion must be one of kl, fro"),
        ({"group_size": 0}, "group_size must be a positive divisor"),
        ({"group_size": 5}, "group_size must be a positive divisor of the 16 channels"),
        ({"whitening_lr": 0.0}, "whitening_lr must be positive"),
        ({"whitening_lr": -1e-3}, "whitening_lr must be positive"),
        ({"momentum": -0.1}, r"momentum must lie in \[0, 1\]"),
        ({"momentum": 1.5}, r"momentum must lie in \[0, 1\]"),
        ({"eps": 0.0}, "eps must be positive"),
        ({"group_size": "3"}, "group_size must be a positive divisor"),
        ({"group_size": 4.0}, "group_size must be an integer"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        create_norm("swbn", 16, **options)


def test_whitening_rate_follows_the_learning_rate_schedule() -> None:
    """The paper keeps whitening rate / learning rate constant: half the lr, half the step."""
    from fewnorm.norms import learning_rate_scale

    x = torch.randn(6, 16, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3

    def moved(scale: float, couple: bool) -> Tensor:
        module = swbn(16, whitening_lr=0.1, couple_lr=couple).double().train()
        with learning_rate_scale(scale):
            module(x)
        return module.whitening_matrix - torch.eye(16, dtype=torch.float64)

    full = moved(1.0, True)
    torch.testing.assert_close(moved(0.5, True), 0.5 * full, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(moved(0.5, False), full, rtol=0, atol=0)  # decoupled: a fixed rate
