"""``fewnorm evaluate RUN --benchmark lake20`` on constructed runs in Lake's exact format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import get_algorithm
from tests.data.test_lake import SWAPS, expected_errors, lake_files, write_runs_zip


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def make_run(directory: Path, **config: object) -> Path:
    """A run directory whose ``best.pt`` holds a freshly initialized model of ``config``."""
    cfg = RunConfig.model_validate({"norm": "groupnorm", "hidden": 8, **config})
    torch.manual_seed(0)
    model = get_algorithm(cfg).build(cfg, 1)
    directory.mkdir(parents=True)
    torch.save({"config": cfg.model_dump(), "model": model.state_dict()}, directory / "best.pt")
    return directory


@pytest.fixture(scope="module")
def runs_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs_zip(tmp_path_factory.mktemp("lake") / "omniglot" / "all_runs.zip", lake_files(SWAPS))


def test_lake20_json_scores_each_run(runs_zip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", dataset="omniglot-minimal")
    code, stdout, stderr = invoke(
        "evaluate", str(run), "--benchmark", "lake20", "--runs", str(runs_zip), "--json"
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["benchmark"] == "lake20" and result["runs_path"] == str(runs_zip)
    errors = [r["error"] for r in result["runs"]]
    assert errors == expected_errors(SWAPS)  # copies are nearest; swapped labels are errors
    assert [r["run"] for r in result["runs"]][:2] == ["run01", "run02"]
    assert result["mean_error"] == pytest.approx(sum(errors) / 20)
    assert "protocol" not in result  # nearest prototype: the output as before


def test_lake20_scores_a_maml_run_and_records_its_protocol(runs_zip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", dataset="omniglot-minimal", algo="maml", hidden=32, inner_steps_test=3)
    args = ["--benchmark", "lake20", "--runs", str(runs_zip), "--head-init", "proto", "--json"]
    code, stdout, stderr = invoke("evaluate", str(run), *args)
    assert code == 0, stderr
    result = json.loads(stdout)
    # Untrained: the copies are right only if the head starts as nearest prototype and stays so.
    assert [r["error"] for r in result["runs"]] == expected_errors(SWAPS)
    assert result["protocol"] == {
        "algo": "maml",
        "head": "linear",
        "head_init": "proto",
        "ways": 20,
        "trained_ways": 5,
        "inner_steps": 3,
        "inner_lr": 0.4,
        "inner_order": "first",
        "adapts": "body and head",
    }


def test_lake20_table_of_an_anil_run_names_its_protocol(runs_zip: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", dataset="omniglot", algo="anil", head="linear-zero")
    args = ["--benchmark", "lake20", "--runs", str(runs_zip), "--no-progress"]
    code, stdout, stderr = invoke(
        "evaluate", str(run), *args, "--head-init", "proto", "--inner-steps-test", "4"
    )
    assert code == 0, stderr
    assert "head protocol: proto-init 20-way linear-zero head, 4 steps of lr 0.4 (head)" in stdout
    assert "6.50" in stdout  # the mean error of the swapped answers alone


def test_lake20_table_from_the_default_path(
    runs_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(runs_zip.parent.parent))
    run = make_run(tmp_path / "run", dataset="omniglot", norm="batchnorm")
    code, stdout, stderr = invoke("evaluate", str(run), "--benchmark", "lake20", "--no-progress")
    assert code == 0, stderr
    for text in ("Lake's one-shot runs", "run01", "19/20", "run20", "0/20", "100.0", "mean", "6.50"):
        assert text in stdout, text


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ({"dataset": "mini-imagenet"}, [], "trained on 'mini-imagenet'"),
        ({"dataset": "omniglot"}, ["--ways", "5"], "--ways do not apply to --benchmark lake20"),
        ({"dataset": "omniglot"}, ["--benchmark", "lake21"], "unknown benchmark 'lake21'"),
        ({"dataset": "mini-imagenet", "algo": "maml"}, [], "trained on 'mini-imagenet'"),
        ({"dataset": "omniglot", "algo": "maml"}, ["--head-init", "trained"], "keeps the run's 5-way head"),
        ({"dataset": "omniglot", "algo": "anil"}, ["--head-init", "protos"], "unknown head init 'protos'"),
        ({"dataset": "omniglot"}, ["--head-init", "zero"], "--head-init applies to MAML, FOMAML and ANIL"),
        ({"dataset": "omniglot"}, ["--inner-steps-test", "2"], "--inner-steps-test applies to MAML"),
    ],
)
def test_refusals_are_one_line(
    config: dict[str, str], args: list[str], message: str, runs_zip: Path, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", **config)
    code, _, stderr = invoke("evaluate", str(run), "--benchmark", "lake20", "--runs", str(runs_zip), *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr


def test_runs_without_benchmark_and_missing_runs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", dataset="omniglot")
    code, _, stderr = invoke("evaluate", str(run), "--runs", str(tmp_path))
    assert code == 2 and "--runs applies to --benchmark lake20 only" in stderr
    code, _, stderr = invoke("evaluate", str(run), "--benchmark", "lake20", "--data-root", str(tmp_path))
    assert code == 2
    assert "all_runs.zip" in stderr and "fewnorm data download omniglot" in stderr
