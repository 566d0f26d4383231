"""``--split-file``: train, evaluate and refuse lake20 on ``omniglot-vinyals`` (synthetic release)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fewnorm.cli.main import app
from tests.data.synthetic_release import write_split_files

TRAIN = [f"Greek/character01/rot{d:03d}" for d in (0, 90, 180, 270)] + ["Angelic/character02/rot090"]
VAL = ["Latin/character01", "Latin/character02"]
TEST = ["Kannada/character01/rot000", "Kannada/character01/rot270", "Korean/character02"]
SHORT = ["--ways", "2", "--queries", "1", "--train-ways", "2", "--train-queries", "1", "--episodes", "4",
         "--val-every", "2", "--val-episodes", "2", "--test-episodes", "4", "--no-progress"]  # fmt: skip


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def splits(tmp_path: Path) -> Path:
    return write_split_files(tmp_path / "vinyals", train=TRAIN, val=VAL, test=TEST)


def test_split_file_trains_evaluates_and_is_kept_out_of_lake20(
    synthetic_root: Path, splits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(splits.parent)  # a relative --split-file is saved absolute
    out = tmp_path / "run"
    root = ["--data-root", str(synthetic_root)]
    code, stdout, stderr = invoke(
        "train", "--split-file", "vinyals", *root, *SHORT, "--json", "--out", str(out)
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["dataset"] == "omniglot-vinyals" and saved["split_file"] == str(splits.resolve())
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke("evaluate", str(out), "--json", "--no-progress")
    assert code == 0, stderr
    assert json.loads(stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)
    code, _, stderr = invoke("evaluate", str(out), "--benchmark", "lake20", "--runs", str(tmp_path))
    assert code == 2 and stderr.count("\n") == 1
    assert "include evaluation alphabets, which Lake's runs draw on (Angelic" in stderr, stderr

    moved = splits.rename(tmp_path / "moved")  # the run finds its files again with --split-file
    code, stdout, stderr = invoke("evaluate", str(out), "--split-file", str(moved), "--json", "--no-progress")
    assert code == 0, stderr
    assert json.loads(stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)
    write_split_files(moved, train=TRAIN[:4], val=VAL, test=TEST)  # edited after training
    code, _, stderr = invoke("evaluate", str(out), "--split-file", str(moved), "--no-progress")
    assert code == 2 and stderr.count("\n") == 1
    assert "name other classes than the run was trained on" in stderr, stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split-file", "nowhere"], "split file '"),
        (["--dataset", "omniglot-vinyals"], "dataset omniglot-vinyals needs split_file (--split-file)"),
        (
            ["--dataset", "omniglot", "--split-file", "vinyals"],
            "split_file applies to dataset omniglot-vinyals",
        ),
    ],
)
def test_bad_split_file_use_is_one_line(
    args: list[str], message: str, synthetic_root: Path, splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(splits.parent)
    code, _, stderr = invoke("train", *args, "--data-root", str(synthetic_root), *SHORT)
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert message in stderr, stderr


def test_compare_and_probe_take_split_files(synthetic_root: Path, splits: Path, tmp_path: Path) -> None:
    import torch

    threads = torch.get_num_threads()  # --threads sets it for the process: restored below
    root = ["--data-root", str(synthetic_root), "--split-file", str(splits)]
    sweep = tmp_path / "sweep"
    try:
        compare = ["compare", "--norms", "bn,none", *root, *SHORT, "--jobs", "1", "--threads", "1"]
        code, stdout, stderr = invoke(*compare, "--no-plots", "--json", "--out", str(sweep))
    finally:
        torch.set_num_threads(threads)
    assert code == 0, stderr
    rows = {r["label"]: r for r in json.loads(stdout)["rows"]}
    assert rows["batchnorm"]["status"] == rows["none"]["status"] == "ok"
    saved = yaml.safe_load(next(sweep.glob("**/config.yaml")).read_text())
    assert saved["dataset"] == "omniglot-vinyals" and saved["split_file"] == str(splits.resolve())
    probe = ["probe", "--norms", "bn", *root, "--ways", "2", "--queries", "1", "--seeds", "1"]
    code, stdout, stderr = invoke(*probe, "--no-plots", "--json", "--out", str(tmp_path / "p"))
    assert code == 0, stderr
    assert list(json.loads(stdout)["series"]) == ["batchnorm"]
