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
