"""miniImageNet through the CLI: ResNet-12 ProtoNets train on each layout; verify; download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.data.minifiles import LAYOUTS
from tests.data.test_miniimagenet import write_mini_imagenet

TINY = [
    "--dataset", "mini-imagenet", "--ways", "2", "--shots", "1", "--queries", "1", "--train-ways", "2",
    "--train-queries", "1", "--episodes", "2", "--val-every", "2", "--val-episodes", "1",
    "--test-episodes", "2", "--no-progress", "--json",
]  # fmt: skip


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One data root per layout, each with tiny train/val/test splits."""
    base = tmp_path_factory.mktemp("mini")
    return {layout: (write_mini_imagenet(base / layout, layout), base / layout)[1] for layout in LAYOUTS}


@pytest.mark.slow  # ~45 s each on two busy cores: 12.4M parameters at 84x84 on the CPU
@pytest.mark.parametrize("layout", LAYOUTS)
def test_resnet12_protonet_trains_on_each_layout(
    layout: str, roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(roots[layout]))
    out = tmp_path / "run"
    code, stdout, stderr = invoke("train", *TINY, "--backbone", "resnet12", "--out", str(out))
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["config"]["backbone"], summary["config"]["dataset"]) == ("resnet12", "mini-imagenet")
    assert summary["parameters"] == 12_424_320
    assert summary["test"]["episodes"] == 2 and 0.0 <= summary["test"]["accuracy"] <= 1.0
    code, stdout, stderr = invoke("evaluate", str(out), "--json", "--no-progress")
    assert code == 0, stderr
    assert json.loads(stdout)["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv4_trains_with_augmentation_on_each_layout(
    layout: str, roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(roots[layout]))
    code, stdout, stderr = invoke("train", *TINY, "--hidden", "8", "--augment", "--out", str(tmp_path / "r"))
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["config"]["augment"] is True
    assert summary["parameters"] == sum(8 * (9 * c + 2) for c in (3, 8, 8, 8))  # 3 input channels


def test_verify_reports_each_split(roots: dict[str, Path]) -> None:
    code, stdout, _ = invoke("data", "verify", "mini-imagenet", "--data-root", str(roots["csv"]), "--json")
    assert code == 1  # 3/2/2 classes of 4 images, not 64/16/20 of 600
    report = json.loads(stdout)
    assert report["dataset"] == "mini-imagenet" and report["ok"] is False
    counts = [
        (s["split"], s["layout"], s["images"], s["classes"], s["expected_classes"]) for s in report["splits"]
    ]
    assert counts == [("train", "csv", 12, 3, 64), ("val", "csv", 8, 2, 16), ("test", "csv", 8, 2, 20)]
    assert all(s["image_shape"] == [84, 84, 3] and s["expected_per_class"] == 600 for s in report["splits"])
    code, stdout, stderr = invoke("data", "verify", "mini-imagenet", "--data-root", str(roots["pickle"]))
    assert code == 1
    assert "miniImageNet in" in stdout and "pickle" in stdout
    assert "3 classes, expected 64" in stderr


def test_download_explains_or_uses_the_mirror(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEWNORM_MIRROR", raising=False)
    code, stdout, _ = invoke("data", "download", "mini-imagenet", "--data-root", str(tmp_path))
    assert code == 1
    for text in ("no stable public download", "mini-imagenet-cache-train.pkl", "train.csv", "images/",
                 "miniImageNet_category_split_train_phase_train.pickle", "FEWNORM_MIRROR"):  # fmt: skip
        assert text in stdout, text
    monkeypatch.setenv("FEWNORM_MIRROR", (roots["pickle"] / "mini-imagenet").as_uri())
    code, stdout, stderr = invoke("data", "download", "mini-imagenet", "--data-root", str(tmp_path))
    assert code == 0, stderr
    assert "no checksum known" in stdout
    fetched = sorted(p.name for p in (tmp_path / "mini-imagenet").iterdir())
    assert fetched == sorted(f"mini-imagenet-cache-{s}.pkl" for s in ("train", "validation", "test"))
    code, stdout, _ = invoke("data", "verify", "mini-imagenet", "--data-root", str(tmp_path), "--json")
    assert [s["layout"] for s in json.loads(stdout)["splits"]] == ["pickle"] * 3
    monkeypatch.setenv("FEWNORM_MIRROR", (roots["csv"] / "mini-imagenet").as_uri())
    code, _, stderr = invoke("data", "download", "mini-imagenet", "--data-root", str(tmp_path / "other"))
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: could not download")


def test_missing_dataset_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEWNORM_DATA", str(tmp_path))
    code, _, stderr = invoke("train", *TINY)
    assert code == 2
    assert stderr.count("\n") == 1 and "miniImageNet split 'train' not found" in stderr


def test_info_shows_which_layout_each_split_would_be_read_from(roots: dict[str, Path]) -> None:
    for layout in LAYOUTS:
        code, stdout, _ = invoke("data", "info", "--data-root", str(roots[layout]), "--json")
        assert code == 0
        found = json.loads(stdout)["mini-imagenet"]
        assert [(f["split"], f["layout"]) for f in found] == [(s, layout) for s in ("train", "val", "test")]
        assert all(f["size"] == (roots[layout] / "mini-imagenet" / f["file"]).stat().st_size for f in found)
    code, stdout, _ = invoke("data", "info", "--data-root", str(roots["csv"]))
    assert code == 0 and "miniImageNet in" in stdout and "train.csv" in stdout


def test_info_marks_missing_splits(tmp_path: Path) -> None:
    code, stdout, _ = invoke("data", "info", "--data-root", str(tmp_path), "--json")
    assert code == 0
    assert [f["layout"] for f in json.loads(stdout)["mini-imagenet"]] == [None, None, None]
