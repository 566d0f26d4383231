"""The extension points are real: an installed distribution's algorithm and dataset run every command.

``tests/plugins/fewnorm-example-extension`` registers the ``cosineproto`` algorithm and the
``glyphs`` dataset (3x32x32, drawn on the fly) through the ``fewnorm.algorithms`` and
``fewnorm.datasets`` entry points; nothing in fewnorm names them.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app

SOURCE = "fewnorm-example-extension==0.1.0"
PLUGIN = ["--algo", "cosineproto", "--dataset", "glyphs"]
SHORT = ["--episodes", "4", "--val-every", "2", "--val-episodes", "2", "--test-episodes", "4", "--ways", "3",
         "--train-ways", "3", "--queries", "2", "--train-queries", "2", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    try:
        distribution("fewnorm-example-extension")
    except PackageNotFoundError:
        pytest.skip("the example extension is not installed: `make dev` installs it")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extension") / "run"
    code, stdout, stderr = invoke("train", *PLUGIN, "--norm", "swbn", *SHORT, "--out", str(out), "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["config"]["algo"] == "cosineproto" and summary["config"]["dataset"] == "glyphs"
    return out


def test_train_records_the_plugin_and_learns_the_scale(trained: Path) -> None:
    import torch

    versions = json.loads((trained / "versions.json").read_text())
    assert versions["plugins"]["example-extension"] == SOURCE
    model = torch.load(trained / "best.pt", map_location="cpu", weights_only=False)["model"]
    assert "log_scale" in model  # the plugin's own model, built by its own algorithm object
    assert model["embedding.blocks.0.0.weight"].shape[1] == 3  # three channels, from the dataset's spec


def test_evaluate_scores_the_run(trained: Path) -> None:
    code, stdout, stderr = invoke("evaluate", str(trained), "--episodes", "3", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["episodes"] == 3


def test_compare_trains_and_compares_it(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["compare", *PLUGIN, "--norms", "swbn,batchnorm", *SHORT, "--jobs", "1", "--no-plots"]
    code, _, stderr = invoke(*args, "--out", str(out), "--no-progress")
    assert code == 0, stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["norm"] for r in rows) == ["batchnorm", "swbn"]


def test_listings_name_the_distribution() -> None:
    for command, name in (("algorithms", "cosineproto"), ("datasets", "glyphs")):
        code, stdout, _ = invoke(command, "--json")
        sources = {entry["name"]: entry["source"] for entry in json.loads(stdout)}
        assert code == 0 and sources[name] == SOURCE
    code, stdout, _ = invoke("datasets", "show", "example-glyphs", "--json")
    assert json.loads(stdout)["image_shape"] == [3, 32, 32]


def test_the_plugin_algorithm_conforms() -> None:
    from fewnorm.testing import check_algorithm

    check_algorithm("cosineproto", dataset="glyphs", norm="swbn")
