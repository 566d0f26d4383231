"""Episode accuracies summarized as a mean with a 95% interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """Mean over episodes with its 95% half-width ``1.96 * std / sqrt(n)``."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f}%"


def mean_ci95(values: Sequence[float]) -> Interval:
    """Mean and 95% half-width of per-episode values (sample std, ``ddof=1``)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, 0.0, 1)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Interval(mean, 1.96 * math.sqrt(var) / math.sqrt(n), n)
