"""Mean and 95% interval of per-episode accuracies."""

from __future__ import annotations

import math
import statistics

import pytest

from fewnorm.metrics import mean_ci95


def test_interval_matches_textbook_formula() -> None:
    values = [0.5, 0.75, 1.0, 0.25, 0.8]
    interval = mean_ci95(values)
    assert interval.mean == pytest.approx(statistics.mean(values))
    assert interval.ci95 == pytest.approx(1.96 * statistics.stdev(values) / math.sqrt(5))
    assert interval.n == 5
    assert str(mean_ci95([0.9, 0.9])) == "90.00 ± 0.00%"


def test_single_and_empty() -> None:
    assert mean_ci95([0.3]).ci95 == 0.0
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95([])
