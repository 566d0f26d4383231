"""The study's step-memory measurement: every registered algorithm, episodic or minibatch."""

from __future__ import annotations

import pytest

from fewnorm.algorithms import list_algorithms
from fewnorm.config import RunConfig
from fewnorm.episodes import study_measure
from tests.episodes.test_sampler import make_store


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda *a, **k: make_store(size=28))


@pytest.mark.parametrize("algo", [s.name for s in list_algorithms() if s.source == "fewnorm"])
def test_step_memory_is_measured_for_every_algorithm(algo: str) -> None:
    """A method that pre-trains on minibatches (Baseline) is measured on one of its minibatches."""
    config = RunConfig(algo=algo, hidden=8, ways=3, train_ways=3, train_queries=2, meta_batch=1)
    small = study_measure.step_memory(config)
    wide = study_measure.step_memory(config.model_copy(update={"hidden": 16}))
    assert 0 < small < wide  # activations saved for backward grow with the width
