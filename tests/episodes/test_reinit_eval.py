"""``fewnorm evaluate RUN --ways N`` for MAML-family runs: fresh heads on the fixed episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.config import RunConfig
from fewnorm.data import load_split
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.evaluation import evaluate_checkpoint
from fewnorm.episodes.maml import maml_evaluate
from fewnorm.episodes.reinit import DEFAULT_HEAD_INIT, reinit_classifier
from fewnorm.episodes.reinit_eval import evaluate_with_protocol
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.runs import load_checkpoint
from tests.cli.test_lake_cli import make_run

pytestmark = pytest.mark.data


@pytest.fixture
def maml_run(tmp_path: Path, data_env: Path) -> Path:
    return make_run(tmp_path / "maml", dataset="omniglot-minimal", algo="maml", inner_steps_test=2)


def by_hand(run: Path, ways: int, init: str, *, episodes: int = 3, queries: int = 2) -> list[float]:
    """Each fixed test episode: a fresh head for it, then the run's test-time inner loop."""
    state = load_checkpoint(run)
    config = RunConfig.model_validate(state["config"])
    algorithm = get_algorithm(config)
    model = algorithm.build(config, 1)
    model.load_state_dict(state["model"])
    sampler = EpisodeSampler(load_split(config.dataset, "test", None), ways, config.shots, queries)
    loop = algorithm.inner_loop(training=False)  # type: ignore[attr-defined]
    accuracies = []
    for i in range(episodes):
        episode = sampler.fixed(i, config.test_seed)
        fresh = reinit_classifier(model, episode.support, episode.support_labels, ways, init)
        accuracies.append(maml_evaluate(fresh, episode, loop))
    return accuracies


def test_own_ways_score_as_before_other_ways_with_a_fresh_head(maml_run: Path) -> None:
    short = {"episodes": 3, "queries": 2}
    before = evaluate_checkpoint(maml_run, **short)  # the path fewnorm evaluate took until now
    same, protocol = evaluate_with_protocol(maml_run, **short)
    assert same.accuracies == before.accuracies and protocol is not None and protocol.head_init == "trained"
    for ways in (3, 20):
        result, protocol = evaluate_with_protocol(maml_run, ways=ways, **short)
        assert protocol is not None and (protocol.ways, protocol.trained_ways) == (ways, 5)
        assert protocol.head_init == DEFAULT_HEAD_INIT["linear"] and result.ways == ways
        assert result.accuracies == by_hand(maml_run, ways, protocol.head_init)


@pytest.mark.parametrize("init", ["proto", "zero"])
def test_a_fresh_head_at_the_trained_ways_when_asked(maml_run: Path, init: str) -> None:
    result, protocol = evaluate_with_protocol(maml_run, head_init=init, episodes=3, queries=2)
    assert protocol is not None and (protocol.head_init, protocol.ways) == (init, 5)
    assert result.accuracies == by_hand(maml_run, 5, init)  # a fresh head per episode


def test_cli_records_the_protocol_and_refuses_in_one_line(maml_run: Path, tmp_path: Path) -> None:
    args = ["evaluate", str(maml_run), "--episodes", "2", "--queries", "2", "--json", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--ways", "20", "--head-init", "zero"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ways"] == 20 and out["episodes"] == 2
    assert out["protocol"]["head_init"] == "zero" and out["protocol"]["inner_steps"] == 2
    result = CliRunner().invoke(app, [*args, "--ways", "3", "--head-init", "trained"])
    assert (
        result.exit_code == 2
        and result.stderr.count("\n") == 1
        and "keeps the run's 5-way head" in result.stderr
    )
    protonet = make_run(tmp_path / "protonet", dataset="omniglot-minimal")
    result = CliRunner().invoke(app, ["evaluate", str(protonet), "--head-init", "proto", "--no-progress"])
    assert result.exit_code == 2 and "--head-init applies to MAML, FOMAML and ANIL runs" in result.stderr
