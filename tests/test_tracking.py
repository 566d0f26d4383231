"""``fewnorm train --logger``: CSV without dependencies, optional TensorBoard, one-line errors."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.errors import ConfigError, FewnormError
from fewnorm.tracking import Trackers, check_loggers

RECORDS = [
    {"kind": "train", "episode": 50, "loss": 1.2, "accuracy": 0.6},
    {"kind": "val", "episode": 100, "accuracy": 0.8, "ci95": 0.03},
    {"kind": "train", "episode": 100, "loss": 0.9, "accuracy": 0.7},
]
SUMMARY = {"test": {"accuracy": 0.82, "ci95": 0.01, "episodes": 600}}


def _without(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    """Make ``packages`` look not installed to the logger check."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a)
    )


def test_check_loggers_names_and_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_loggers(["csv"]) == ["csv"]
    assert check_loggers(["CSV,csv"]) == ["csv"]
    with pytest.raises(FewnormError, match="Did you mean 'tensorboard'"):
        check_loggers(["tensorbord"])
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("wandb", "tensorboard") else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"--logger wandb needs the wandb package: pip install wandb"):
        check_loggers(["wandb"])
    with pytest.raises(ConfigError, match=r"pip install 'fewnorm\[tensorboard\]'"):
        check_loggers(["tensorboard"])


def test_csv_tracker_logs_curves_config_and_test(tmp_path: Path) -> None:
    trackers = Trackers(["csv"], tmp_path, {"norm": "batchnorm", "episodes": 100, "norm_options": {}})
    for record in RECORDS:
        trackers.on_record(record)
    trackers.finish(SUMMARY)
    rows = list(csv.DictReader((tmp_path / "logs" / "csv" / "metrics.csv").open()))
    assert [(r["kind"], r["episode"]) for r in rows] == [
        ("train", "50"),
        ("val", "100"),
        ("train", "100"),
        ("test", "100"),
    ]
    assert rows[1]["ci95"] == "0.03" and rows[3]["accuracy"] == "0.82"
    assert json.loads((tmp_path / "logs" / "csv" / "config.json").read_text())["norm"] == "batchnorm"
    # a resumed run appends, without a second header
    again = Trackers(["csv"], tmp_path, {"norm": "batchnorm"})
    again.on_record(RECORDS[0])
    again.close()
    lines = (tmp_path / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 6 and lines.count(lines[0]) == 1


def test_no_logger_writes_no_logs(tmp_path: Path) -> None:
    trackers = Trackers([], tmp_path, {})
    trackers.on_record(RECORDS[0])
    trackers.close()
    assert not (tmp_path / "logs").exists()


def test_tensorboard_tracker_writes_events(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    trackers = Trackers(["tensorboard"], tmp_path, {"norm": "batchnorm", "episodes": 100})
    for record in RECORDS:
        trackers.on_record(record)
    trackers.finish(SUMMARY)
    assert list((tmp_path / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_missing_logger_package_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    result = CliRunner().invoke(app, ["train", "--logger", "mlflow", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: --logger mlflow needs the mlflow package: pip install mlflow"]
    assert not (tmp_path / "r").exists()


@pytest.mark.data
def test_train_with_csv_logger_and_run_curves(data_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--episodes", "3", "--val-every", "3", "--val-episodes", "4", "--test-episodes", "5"]
    args += ["--hidden", "8", "--train-ways", "5", "--train-queries", "2", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--no-progress", "--logger", "csv", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader((out / "logs" / "csv" / "metrics.csv").open()))
    assert [r["kind"] for r in rows] == ["train", "val", "test"]
    assert float(rows[-1]["accuracy"]) == json.loads(result.stdout)["test"]["accuracy"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


class _Recorder:
    """Stands in for wandb / mlflow: records the calls the trackers make."""

    def __init__(self, name: str) -> None:
        import importlib.machinery

        self.__spec__ = importlib.machinery.ModuleSpec(name, None)
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def call(*args: object, **kwargs: object) -> _Recorder:
            self.calls.append((attr, args, kwargs))
            return self

        return call


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_wandb_and_mlflow_run_offline(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    fake = _Recorder(name)
    monkeypatch.setitem(sys.modules, name, fake)
    assert check_loggers([name]) == [name]
    trackers = Trackers([name], tmp_path / "run", {"norm": "batchnorm", "episodes": 100})
    for record in RECORDS:
        trackers.on_record(record)
    trackers.finish(SUMMARY)
    calls = {attr: (args, kwargs) for attr, args, kwargs in fake.calls}
    if name == "wandb":
        assert calls["init"][1]["mode"] == "offline"
        assert calls["init"][1]["config"]["norm"] == "batchnorm"
        assert ("log", ({"test/accuracy": 0.82, "test/ci95": 0.01},), {"step": 100}) in fake.calls
        assert "finish" in calls
    else:
        assert calls["set_tracking_uri"][0][0].startswith("file://")
        assert calls["log_params"][0][0]["norm"] == "batchnorm"
        assert ("log_metrics", ({"val_accuracy": 0.8, "val_ci95": 0.03},), {"step": 100}) in fake.calls
        assert "end_run" in calls


def test_a_figure_that_cannot_be_drawn_does_not_fail_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewnorm import plots

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no backend")

    monkeypatch.setattr(plots, "plot_run", broken)
    trackers = Trackers(["csv"], tmp_path, {"episodes": 100})
    trackers.on_record(RECORDS[0])
    assert trackers.finish(SUMMARY) is None
    assert (tmp_path / "logs" / "csv" / "metrics.csv").is_file()
