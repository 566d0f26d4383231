"""The study's statistics: paired t intervals, bootstrap rank intervals, Spearman rank correlation.

Pure functions on plain numbers (NumPy, no torch), so that they can be checked against
hand-computed values and SciPy:

- :func:`paired_t` -- mean of per-episode differences over the shared ``(seed, episode)``
  keys with a Student-t 95% interval (every run of a study is scored on the same test
  episodes, so differences are paired);
- :func:`bootstrap_ranks` -- each normalizer's rank (1 = most accurate) and its 95%
  percentile interval under a two-level bootstrap: seeds resampled jointly for every
  normalizer (the same seed gives every normalizer the same training episodes), then test
  episodes resampled jointly (they are shared);
- :func:`spearman` and :func:`spearman_bootstrap` -- rank correlation (average ranks for
  ties) and its percentile interval over normalizers resampled with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fewnorm.metrics import Interval

K = TypeVar("K")

#: Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)  # fmt: skip
_Z975 = 1.959963984540054
#: Bootstrap replicates unless a caller asks for others.
REPLICATES = 2000


def t95(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom.

    The table to 30, beyond it the Cornish-Fisher expansion in ``1/df`` (error < 1e-4 there).
    """
    if df < 1:
        raise ValueError(f"t quantile needs at least one degree of freedom, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def t_interval(values: Sequence[float]) -> Interval:
    """Mean with its Student-t 95% half-width (``ci95`` 0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, 0.0, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t95(n - 1) * sd / math.sqrt(n), n)


def paired_t(a: Mapping[K, float], b: Mapping[K, float]) -> Interval | None:
    """Mean of ``a[k] - b[k]`` over the keys both hold, with its t interval; None when none are shared."""
    keys = [k for k in a if k in b]
    if not keys:
        return None
    return t_interval([a[k] - b[k] for k in keys])


@dataclass(frozen=True)
class RankInterval:
    """A normalizer's rank by mean accuracy (1 = best) and its bootstrap 95% percentile interval."""

    rank: int
    low: int
    high: int
    p_best: float  # share of bootstrap replicates in which it ranks first


def ranks_of(means: np.ndarray) -> np.ndarray:
    """Competition ranks, highest first (``[0.9, 0.8, 0.9] -> [1, 3, 1]``), along the last axis."""
    m = np.asarray(means, dtype=float)
    return (m[..., None, :] > m[..., :, None]).sum(axis=-1) + 1


def bootstrap_ranks(
    accuracies: Mapping[str, np.ndarray], replicates: int = REPLICATES, seed: int = 0
) -> dict[str, RankInterval]:
    """Ranks with their stability; ``accuracies[label]`` is (seeds, episodes), the same shape for all.

    Row ``i`` of every array is the same seed and column ``j`` the same test episode.
    """
    labels = list(accuracies)
    if not labels:
        return {}
    data = np.stack([np.asarray(accuracies[k], dtype=float) for k in labels])  # (labels, seeds, episodes)
    if data.ndim != 3:
        raise ValueError("each normalizer's accuracies must be a (seeds, episodes) array")
    _, n_seeds, n_episodes = data.shape
    point = ranks_of(data.mean(axis=(1, 2)))
    rng = np.random.default_rng(seed)
    # a resample as counts: weight[r, j] = how often replicate r drew episode j (or seed j)
    episode_w = _draw_counts(rng, replicates, n_episodes)  # (replicates, episodes)
    seed_w = _draw_counts(rng, replicates, n_seeds)  # (replicates, seeds)
    per_seed = data @ episode_w.T  # (labels, seeds, replicates): resampled per-seed means
    picked = np.einsum("lsr,rs->rl", per_seed, seed_w)  # (replicates, labels): resampled means
    boot = ranks_of(picked)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0, method="inverted_cdf")
    return {
        k: RankInterval(int(point[i]), int(low[i]), int(high[i]), float((boot[:, i] == 1).mean()))
        for i, k in enumerate(labels)
    }


def _draw_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """Per replicate, how often each of ``n`` items was drawn (n draws with replacement), over n."""
    draws = rng.integers(0, n, size=(replicates, n))
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1.0)
    return counts / n


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ascending, ties given their average rank (as ``scipy.stats.rankdata``)."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); NaN when either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else math.nan


@dataclass(frozen=True)
class Correlation:
    """A rank correlation over ``n`` normalizers with its bootstrap 95% percentile interval."""

    rho: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies on one side of zero."""
        return self.low > 0 or self.high < 0


#: Fewest pairs a bootstrap interval of a rank correlation is given for: resamples of fewer
#: hold so few distinct pairs that the interval says nothing (with 3 it is mostly [-1, 1] or a point).
MIN_PAIRS = 5


def spearman_bootstrap(
    x: Sequence[float], y: Sequence[float], replicates: int = REPLICATES, seed: int = 0
) -> Correlation:
    """:func:`spearman` with a percentile interval over pairs resampled with replacement.

    Replicates in which either side is constant (no correlation defined) are dropped; with
    fewer than :data:`MIN_PAIRS` pairs the interval is NaN.
    """
    rho = spearman(x, y)
    n = len(x)
    if n < MIN_PAIRS:
        return Correlation(rho, math.nan, math.nan, n)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for idx in rng.integers(0, n, size=(replicates, n)):
        r = spearman(xs[idx], ys[idx])
        if not math.isnan(r):
            values.append(r)
    if not values:
        return Correlation(rho, math.nan, math.nan, n)
    low, high = np.percentile(values, [2.5, 97.5])
    return Correlation(rho, float(low), float(high), n)
