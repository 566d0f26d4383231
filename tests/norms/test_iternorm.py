"""IterNorm: conformance, Newton-Schulz against a direct implementation, (partial) whitening."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import Tensor

from fewnorm.errors import OptionError
from fewnorm.norms import create_norm
from fewnorm.norms.iternorm import IterNorm2d, iternorm
from fewnorm.testing import check_normalizer

EPS = 1e-5


def _correlated(n: int = 64, c: int = 8, hw: int = 4, seed: int = 0) -> Tensor:
    """A well-conditioned correlated batch: ``x = A z + 2`` with singular values of A in [1, 0.3]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    mixing = q @ torch.diag(torch.linspace(1.0, 0.3, c, dtype=torch.float64)) @ q.T
    z = torch.randn(n, c, hw, hw, generator=g, dtype=torch.float64)
    return torch.einsum("ij,njhw->nihw", mixing, z) + 2.0


def _columns(x: Tensor) -> Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, m)


def _covariance(x: Tensor) -> Tensor:
    cols = _columns(x)
    cols = cols - cols.mean(dim=1, keepdim=True)
    return cols @ cols.T / cols.shape[1]  # (C, C)


def _direct_whitening(x: np.ndarray, iterations: int) -> np.ndarray:
    """IterNorm's W for one group, written out in numpy from the paper's Algorithm 1."""
    xc = x - x.mean(axis=1, keepdims=True)  # (Cg, m)
    sigma = xc @ xc.T / x.shape[1] + EPS * np.eye(x.shape[0])
    sigma_n = sigma / np.trace(sigma)
    p = np.eye(x.shape[0])
    for _ in range(iterations):
        p = 0.5 * (3 * p - np.linalg.matrix_power(p, 3) @ sigma_n)
    return p / np.sqrt(np.trace(sigma))


def _whitened(x: Tensor, iterations: int) -> Tensor:
    module = iternorm(x.shape[1], group_size=x.shape[1], iterations=iterations, affine=False)
    return module.double()(x)


def _distance_to_identity(cov: Tensor) -> float:
    return float(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype)))


def _randomize_affine(module: IterNorm2d) -> tuple[Tensor, Tensor]:
    gamma, beta = module.weight, module.bias
    assert gamma is not None and beta is not None
    with torch.no_grad():
        gamma.uniform_(0.5, 1.5)
        beta.normal_()
    return gamma, beta


# -- conformance -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"group_size": 4, "iterations": 3, "affine": False}])
def test_conforms(options: dict[str, object]) -> None:
    check_normalizer("iternorm", options=options)


def test_group_size_default_is_halved_until_it_divides() -> None:
    assert iternorm(96).group_size == 32
    assert iternorm(256).group_size == 64
    assert iternorm(16).group_size == 16
    assert iternorm(64, group_size=16).running_whitening.shape == (4, 16, 16)


# -- Newton-Schulz against a direct implementation --------------------------------------------


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_first_newton_schulz_steps_match_a_direct_implementation(iterations: int) -> None:
    x = torch.randn(6, 8, 3, 3, dtype=torch.float64) * 2 + 1
    module = iternorm(8, group_size=4, iterations=iterations, affine=False).double()
    y = module(x)
    cols = _columns(x).numpy()
    blocks = [_direct_whitening(cols[g : g + 4], iterations) for g in (0, 4)]
    w = torch.from_numpy(np.block([[blocks[0], np.zeros((4, 4))], [np.zeros((4, 4)), blocks[1]]]))
    centred = x - x.mean(dim=(0, 2, 3))[None, :, None, None]
    torch.testing.assert_close(y, torch.einsum("ij,njhw->nihw", w, centred))
    if iterations == 1:  # closed form: W = (1.5 I - 0.5 S / tr S) / sqrt(tr S)
        s = _covariance(x[:, :4]) + EPS * torch.eye(4, dtype=torch.float64)
        tr = s.trace()
        torch.testing.assert_close(w[:4, :4], (1.5 * torch.eye(4) - 0.5 * s / tr) / tr.sqrt())


# -- defining property: whitening, partial at small T ------------------------------------------


def test_many_iterations_whiten_a_well_conditioned_batch() -> None:
    x = _correlated()
    assert _distance_to_identity(_covariance(x)) > 0.5
    assert _distance_to_identity(_covariance(_whitened(x, 50))) < 1e-3


def test_five_iterations_whiten_partially() -> None:
    x = _correlated()
    c = x.shape[1]
    distances = [_distance_to_identity(_covariance(_whitened(x, t))) for t in range(1, 8)]
    full = _distance_to_identity(_covariance(_whitened(x, 50)))
    # the input's own distance, at the trace scale the output has (tr = C):
    cov = _covariance(x)
    before = _distance_to_identity(cov * c / cov.trace())
    assert before > distances[4] > 10 * full  # T = 5: better than the input, short of whitening
    assert all(a > b for a, b in itertools.pairwise(distances))  # monotone in T
    eigenvalues = torch.linalg.eigvalsh(_covariance(_whitened(x, 5)))
    assert eigenvalues.max() <= 1 + 1e-9  # Newton-Schulz approaches 1 from below
    cond_in, cond_out = (float(torch.linalg.cond(m)) for m in (cov, _covariance(_whitened(x, 5))))
    assert 1.05 < cond_out < cond_in


# -- running statistics -----------------------------------------------------------------------


def test_eval_uses_running_mean_and_whitening() -> None:
    torch.manual_seed(0)
    module = iternorm(8, group_size=4, iterations=3, momentum=0.1).double()
    running_mean = torch.zeros(8, dtype=torch.float64)
    running_w = torch.eye(8, dtype=torch.float64)
    for seed in range(3):
        x = _correlated(n=10, hw=3, seed=seed)
        module(x)
        cols = _columns(x).numpy()
        blocks = [torch.from_numpy(_direct_whitening(cols[g : g + 4], 3)) for g in (0, 4)]
        running_mean = 0.9 * running_mean + 0.1 * x.mean(dim=(0, 2, 3))
        running_w = 0.9 * running_w + 0.1 * torch.block_diag(*blocks)
    torch.testing.assert_close(module.running_mean, running_mean)
    torch.testing.assert_close(torch.block_diag(*module.running_whitening), running_w)
    gamma, beta = _randomize_affine(module)
    module.eval()
    before = {k: v.clone() for k, v in module.named_buffers()}
    x = torch.randn(3, 8, 2, 2, dtype=torch.float64)
    y = module(x)
    for key, value in module.named_buffers():
        assert torch.equal(value, before[key]), key
    expected = torch.einsum("ij,njhw->nihw", running_w, x - running_mean[None, :, None, None])
    expected = expected * gamma[None, :, None, None] + beta[None, :, None, None]
    torch.testing.assert_close(y, expected)


# -- differentiability and rank deficiency ------------------------------------------------------


def test_gradients_through_the_iterations_are_exact() -> None:
    module = IterNorm2d(4, 4, iterations=3).double()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradgradcheck(module, (x,))


@pytest.mark.parametrize(("n", "hw"), [(5, 1), (1, 1), (2, 3)])
def test_rank_deficient_covariance_stays_finite(n: int, hw: int) -> None:
    """m < Cg: 5 images, a single image, 2 images at 3x3 against 64-channel groups."""
    module = iternorm(64, iterations=5).double()
    x = torch.randn(n, 64, hw, hw, dtype=torch.float64, requires_grad=True)
    y = module(x)
    inputs = [x, *module.parameters()]
    first = torch.autograd.grad((y * torch.randn_like(y)).sum(), inputs, create_graph=True)
    penalty = torch.stack([g.pow(2).sum() for g in first]).sum()
    second = torch.autograd.grad(penalty, inputs, allow_unused=True)
    assert second[0] is not None
    assert all(torch.isfinite(t).all() for t in (y, *first, *second) if t is not None)
    module.eval()
    assert torch.isfinite(module(x)).all()


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"group_size": 0}, "group_size must be a positive divisor"),
        ({"group_size": 3}, "group_size must be a positive divisor of the 16 channels"),
        ({"iterations": 0}, "iterations must be positive"),
        ({"iterations": -2}, "iterations must be positive"),
        ({"iterations": 2.5}, "iterations must be a positive integer"),
        ({"momentum": -0.1}, r"momentum must lie in \[0, 1\]"),
        ({"momentum": 1.1}, r"momentum must lie in \[0, 1\]"),
        ({"eps": -1e-5}, "eps must be positive"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        create_norm("iternorm", 16, **options)
