"""``--val-protocol lake-style`` in training and ``--benchmark lake-style`` in evaluation, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.test_lake_cli import invoke, make_run


def _refused(code: int, stderr: str, message: str) -> None:
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--val-fold", "1"], "val_fold (--val-fold) applies to val_protocol lake-style only"),
        (["--val-protocol", "lake-style"], "val_protocol lake-style needs val_fold (--val-fold K)"),
        (["--val-protocol", "lakes"], "val_protocol must be one of episodes, lake-style"),
        (
            ["--val-protocol", "lake-style", "--val-fold", "0", "--dataset", "mini-imagenet"],
            "val_protocol lake-style applies to omniglot and omniglot-minimal, not mini-imagenet",
        ),
        (["--val-protocol", "lake-style", "--val-fold", "-1"], "key 'val_fold'"),
    ],
)
def test_training_refusals_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("train", *args, "--out", str(tmp_path / "r"), "--no-progress")
    _refused(code, stderr, message)


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ({"dataset": "omniglot-minimal"}, ["--val-fold", "0", "--ways", "5"], "--ways do not apply"),
        (
            {"dataset": "omniglot-minimal"},
            ["--runs", "x.zip"],
            "--runs do not apply to --benchmark lake-style",
        ),
        (
            {"dataset": "omniglot-minimal"},
            ["--benchmark", "lake20", "--val-fold", "0"],
            "--val-fold do not apply",
        ),
        ({"dataset": "mini-imagenet"}, ["--val-fold", "0"], "lake-style folds are defined on omniglot and"),
        ({"dataset": "omniglot-minimal"}, [], "this run names no lake-style fold"),
    ],
)
def test_evaluation_refusals_without_data(
    config: dict[str, str], args: list[str], message: str, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", **config)
    bench = [] if "--benchmark" in args else ["--benchmark", "lake-style"]
    code, _, stderr = invoke("evaluate", str(run), *bench, *args)
    _refused(code, stderr, message)


def test_val_fold_needs_a_benchmark(tmp_path: Path) -> None:
    code, _, stderr = invoke("evaluate", str(make_run(tmp_path / "run")), "--val-fold", "1")
    _refused(code, stderr, "--val-fold, --ensemble and --tta apply to --benchmark lake-style only")


@pytest.mark.data
@pytest.mark.parametrize(
    ("config", "fold", "message"),
    [
        ({}, "3", "training classes (omniglot-minimal, all its training alphabets) include Korean"),
        (
            {"val_protocol": "lake-style", "val_fold": 3},
            "2",
            "(omniglot-minimal, fold 3 held out) include Greek",
        ),
        ({"val_protocol": "lake-style", "val_fold": 3}, "5", "--val-fold 5 is out of range"),
        ({"dataset": "omniglot", "val_protocol": "lake-style", "val_fold": 0}, None, "images_background.zip"),
    ],
)
def test_a_run_that_trained_on_the_folds_alphabet_is_refused(
    config: dict[str, object], fold: str | None, message: str, data_env: Path, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", **config)
    code, _, stderr = invoke(
        "evaluate", str(run), "--benchmark", "lake-style", *(["--val-fold", fold] if fold else [])
    )
    _refused(code, stderr, message)  # omniglot: its archives are not in the test data


@pytest.mark.data
def test_train_then_evaluate_on_the_held_out_fold(data_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    flags = ["--val-protocol", "lake-style", "--val-fold", "1", "--hidden", "8", "--episodes", "4"]
    flags += ["--val-every", "2", "--val-episodes", "3", "--test-episodes", "2", "--train-ways", "5"]
    flags += ["--affine", "--no-train-rotations"]
    code, stdout, stderr = invoke("train", *flags, "--out", str(out), "--no-progress", "--threads", "1")
    assert code == 0, stderr
    assert "best lake-style error (fold 1)" in stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["val_protocol"], config["val_fold"]) == ("lake-style", 1)
    assert (config["affine"], config["train_rotations"]) == (True, False)
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [v for v in vals if v["kind"] == "val"]
    assert [v["episode"] for v in vals] == [2, 4]
    assert all(v["lake_style_error"] == pytest.approx(100 * (1 - v["accuracy"])) for v in vals)

    code, stdout, stderr = invoke(
        "evaluate", str(out), "--benchmark", "lake-style", "--episodes", "7", "--json"
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert (result["benchmark"], result["fold"], result["alphabet"]) == ("lake-style", 1, "Early_Aramaic")
    assert result["seed"] == config["test_seed"] and len(result["runs"]) == 7
    assert all(r["items"] == 20 and r["error"] == 100 - 5 * r["correct"] for r in result["runs"])
    again = json.loads(
        invoke("evaluate", str(out), "--benchmark", "lake-style", "--episodes", "7", "--json")[1]
    )
    assert again["runs"] == result["runs"]  # the same fixed runs


def test_recipe_keys_reach_the_data_options() -> None:
    from fewnorm.config import RunConfig

    fold = RunConfig(val_protocol="lake-style", val_fold=2, train_rotations=False, affine=True)
    assert fold.data_options == {"rotations": False, "lake_fold": 2}
    assert RunConfig().data_options == {} and RunConfig(val_protocol="episodes").val_protocol is None
    with pytest.raises(ValueError, match="train_rotations applies to omniglot and omniglot-minimal"):
        RunConfig(dataset="mini-imagenet", train_rotations=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "lake20", "--tta", "2"], "--tta do not apply to --benchmark lake20"),
        (["--tta", "2"], "--val-fold, --ensemble and --tta apply to --benchmark lake-style only"),
    ],
)
def test_ensembles_and_tta_are_lake_style_options(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("evaluate", str(make_run(tmp_path / "run")), *args)
    _refused(code, stderr, message)


@pytest.mark.data
def test_ensembles_and_tta_score_protonets_only(data_env: Path, tmp_path: Path) -> None:
    fold = {"val_protocol": "lake-style", "val_fold": 0}
    maml = make_run(tmp_path / "maml", algo="maml", **fold)
    code, _, stderr = invoke("evaluate", str(maml), "--benchmark", "lake-style", "--tta", "2")
    _refused(code, stderr, "--ensemble and --tta apply to protonet runs; this run is 'maml'")
    proto, other = (
        make_run(tmp_path / "a", **fold),
        make_run(tmp_path / "b", val_protocol="lake-style", val_fold=1),
    )
    args = ["--benchmark", "lake-style", "--ensemble", str(other)]
    code, _, stderr = invoke("evaluate", str(proto), *args)
    _refused(code, stderr, "(omniglot-minimal, fold 1 held out) include Balinese")
    code, stdout, stderr = invoke(
        "evaluate", str(proto), *args[:2], "--ensemble", str(proto), "--tta", "2", "--episodes", "3", "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["ensemble"] == [str(proto)] and json.loads(stdout)["tta"] == 2


@pytest.mark.data
def test_a_maml_run_validates_with_a_fresh_twenty_way_head(data_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "maml"
    flags = ["--algo", "maml", "--val-protocol", "lake-style", "--val-fold", "0", "--hidden", "8"]
    flags += ["--episodes", "2", "--val-every", "2", "--val-episodes", "2", "--test-episodes", "2"]
    flags += ["--inner-steps-test", "1", "--threads", "1", "--no-progress", "--out", str(out)]
    code, _, stderr = invoke("train", *flags)
    assert code == 0, stderr
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [v["episode"] for v in vals if v["kind"] == "val"] == [2]
    code, stdout, stderr = invoke(
        "evaluate", str(out), "--benchmark", "lake-style", "--episodes", "2", "--json"
    )
    assert code == 0, stderr
    assert (
        json.loads(stdout)["protocol"]["ways"] == 20 and json.loads(stdout)["protocol"]["head_init"] == "zero"
    )
