"""Reptile, Baseline and Baseline++ from the command line: train, rescore, other ways, lake20."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from tests.cli.test_lake_cli import make_run, runs_zip  # noqa: F401 (a fixture)

SHORT = [
    "--episodes",
    "2",
    "--val-every",
    "2",
    "--val-episodes",
    "2",
    "--test-episodes",
    "3",
    "--hidden",
    "8",
]
FAST = {
    "reptile": ["--meta-batch", "2", "--inner-steps", "2", "--inner-steps-test", "3"],
    "baseline": ["--inner-steps-test", "5"],
    "baseline-pp": ["--inner-steps-test", "5", "--finetune-backbone"],
}


@pytest.mark.data
@pytest.mark.parametrize("algo", list(FAST))
def test_train_prints_the_summary_then_rescores_at_other_ways(
    algo: str, data_env: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["train", "--algo", algo, "--norm", "swbn", "--ways", "5", "--shots", "1", *SHORT, *FAST[algo]]
    result = CliRunner().invoke(app, [*args, "--threads", "1", "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "fewnorm run summary" in result.stdout and "test accuracy" in result.stdout
    assert ("inner loop" if algo == "reptile" else "statistics:") in result.stdout
    scores = []
    for extra in ([], [], ["--query-one-at-a-time"], ["--ways", "3"]):
        res = CliRunner().invoke(app, ["evaluate", str(out), "--json", "--no-progress", *extra])
        assert res.exit_code == 0, res.stderr
        scores.append(json.loads(res.stdout)["accuracy"])
    assert scores[0] == scores[1]  # fixed episodes, fixed fresh heads and shuffles
    assert all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize(("algo", "extra"), [("reptile", {"inner_steps_test": 2}), ("baseline-pp", {})])
def test_lake20_gives_each_run_a_fresh_head(algo: str, extra: dict, runs_zip: Path, tmp_path: Path) -> None:  # noqa: F811
    more = {"pretrain_classes": 10, "inner_steps_test": 5} if algo != "reptile" else {}
    run = make_run(tmp_path / "run", dataset="omniglot-minimal", algo=algo, **extra, **more)
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--benchmark", "lake20", "--runs", str(runs_zip), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    errors = [r["error"] for r in json.loads(result.stdout)["runs"]]
    assert len(errors) == 20 and all(0 <= e <= 100 for e in errors)


def test_reptile_option_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--algo", "reptile", "--inner-optimizer", "rmsprop", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code != 0
    assert "inner_optimizer must be one of sgd, adam, sgd-momentum" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--algo", "baseline", "--inner-steps", "3"],
            "and reptile; baseline does not use it",
        ),
        (
            ["--algo", "baseline-pp", "--head", "linear"],
            "--head linear applies to maml, fomaml,",
        ),
        (
            ["--algo", "maml", "--inner-optimizer", "adam"],
            "baseline and baseline-pp; maml does not",
        ),
        (["--algo", "reptile", "--finetune-backbone"], "reptile does not use it: drop --finetune-backbone"),
    ],
)
def test_options_an_algorithm_would_ignore_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()
