"""The study's statistics on constructed inputs, against SciPy where it is installed and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fewnorm.study import stats


def test_t_quantiles_match_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 10, 29, 30, 31, 45, 100, 599, 10_000):
        assert stats.t95(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-3 if df <= 30 else 1e-4)


def test_t_quantile_by_hand() -> None:
    assert stats.t95(1) == 12.706
    assert stats.t95(4) == 2.776
    with pytest.raises(ValueError, match="degree of freedom"):
        stats.t95(0)


def test_paired_t_on_hand_computed_differences() -> None:
    # differences 0.1, 0.3, 0.2, 0.2: mean 0.2, sd sqrt(0.02/3), t(3) = 3.182
    a = {(0, 0): 0.6, (0, 1): 0.8, (1, 0): 0.7, (1, 1): 0.9, (2, 0): 0.5}
    b = {(0, 0): 0.5, (0, 1): 0.5, (1, 0): 0.5, (1, 1): 0.7}
    d = stats.paired_t(a, b)
    assert d is not None
    assert d.n == 4  # (2, 0) has no partner
    assert d.mean == pytest.approx(0.2)
    assert d.ci95 == pytest.approx(3.182 * math.sqrt(0.02 / 3) / 2)
    assert stats.paired_t(a, {(9, 9): 1.0}) is None


def test_paired_t_matches_scipy_interval() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a = rng.random(200)
    b = a - 0.05 + 0.1 * rng.standard_normal(200)
    d = stats.paired_t(dict(enumerate(a)), dict(enumerate(b)))
    assert d is not None
    low, high = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d.mean - d.ci95 == pytest.approx(low, abs=1e-6)
    assert d.mean + d.ci95 == pytest.approx(high, abs=1e-6)


def test_pairing_is_tighter_than_independent_intervals() -> None:
    """Shared episodes: a constant offset has a zero-width paired interval."""
    rng = np.random.default_rng(0)
    base = rng.random(100)
    d = stats.paired_t(dict(enumerate(base + 0.03)), dict(enumerate(base)))
    assert d is not None and d.mean == pytest.approx(0.03) and d.ci95 == pytest.approx(0.0, abs=1e-12)


def test_competition_ranks() -> None:
    assert stats.ranks_of(np.array([0.9, 0.8, 0.9, 0.1])).tolist() == [1, 3, 1, 4]


def test_a_dominant_normalizer_ranks_first_in_every_replicate() -> None:
    rng = np.random.default_rng(1)
    low = rng.random((3, 40)) * 0.5
    ranks = stats.bootstrap_ranks({"good": low + 0.5, "mid": low + 0.25, "bad": low}, replicates=300)
    assert ranks["good"] == stats.RankInterval(1, 1, 1, 1.0)
    assert ranks["mid"] == stats.RankInterval(2, 2, 2, 0.0)
    assert ranks["bad"] == stats.RankInterval(3, 3, 3, 0.0)


def test_exchangeable_normalizers_have_wide_rank_intervals() -> None:
    """Two normalizers that swap on every other seed and episode: no stable rank."""
    rng = np.random.default_rng(2)
    x = rng.random((4, 60))
    y = rng.random((4, 60))
    ranks = stats.bootstrap_ranks({"x": x, "y": y}, replicates=1000)
    for r in ranks.values():
        assert (r.low, r.high) == (1, 2)
        assert 0.05 < r.p_best < 0.95
    assert ranks["x"].p_best + ranks["y"].p_best == pytest.approx(1.0)


def test_rank_bootstrap_is_paired_across_normalizers() -> None:
    """A seed that is hard for everyone cannot reorder normalizers that differ by a constant."""
    rng = np.random.default_rng(4)
    shared = rng.random((3, 30)) + np.array([[0.0], [-0.4], [0.3]])  # seeds of very different difficulty
    ranks = stats.bootstrap_ranks({"a": shared + 0.01, "b": shared}, replicates=500)
    assert (ranks["a"].low, ranks["a"].high, ranks["a"].p_best) == (1, 1, 1.0)


def test_average_ranks_and_spearman_match_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.integers(0, 5, size=9).astype(float)  # ties
        y = rng.random(9)
        assert stats.average_ranks(x).tolist() == scipy_stats.rankdata(x).tolist()
        assert stats.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


def test_spearman_by_hand() -> None:
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks 1..5 against 2,1,4,3,5: sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    assert stats.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_bootstrap_interval() -> None:
    perfect = stats.spearman_bootstrap([1, 2, 3, 4, 5, 6], [1, 3, 4, 8, 9, 12], replicates=500)
    assert perfect.rho == pytest.approx(1.0) and perfect.low == pytest.approx(1.0) and perfect.excludes_zero
    rng = np.random.default_rng(6)
    noise = stats.spearman_bootstrap(rng.random(12), rng.random(12), replicates=500)
    assert noise.low < noise.rho < noise.high
    assert noise.low < 0 < noise.high and not noise.excludes_zero
    few = stats.spearman_bootstrap([1, 2, 3, 4], [2, 1, 4, 3])
    assert few.n == 4 and few.rho == pytest.approx(0.6) and math.isnan(few.low) and not few.excludes_zero
