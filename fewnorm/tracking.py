"""Optional experiment tracking for ``fewnorm train --logger``: CSV, TensorBoard, W&B, MLflow.

Each tracker receives the run's configuration once and every record that ``metrics.jsonl``
receives (training loss and accuracy every 50 episodes, validation accuracy with its
interval), then the test result. Files go under ``<run dir>/logs/<logger>/``; W&B and
MLflow run offline (nothing leaves the machine). CSV needs nothing beyond the standard
library; the others need their package, checked before training starts.

No module here imports torch, tensorboard, wandb or mlflow at import time.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fewnorm.errors import ConfigError

log = logging.getLogger(__name__)

#: Logger name -> (importable module it needs, what to install), ``None``: no dependency.
LOGGERS: dict[str, tuple[str, str] | None] = {
    "csv": None,
    "tensorboard": ("tensorboard", "pip install 'fewnorm[tensorboard]'"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow"),
}
#: Folder of the trackers' files inside the run directory.
LOGS_DIR = "logs"
#: Columns of ``logs/csv/metrics.csv``.
CSV_COLUMNS = ("kind", "episode", "loss", "accuracy", "ci95")


def check_loggers(names: Sequence[str] | None) -> list[str]:
    """Canonical logger names from ``--logger`` values (repeatable or comma-separated).

    Raises :class:`ConfigError` in one line for an unknown name (with the closest) or for a
    logger whose package is not importable (naming the package to install).
    """
    from fewnorm.names import normalize_name, unknown_name

    chosen: list[str] = []
    for value in names or []:
        for raw in value.split(","):
            if not raw.strip():
                continue
            key = normalize_name(raw)
            match = next((name for name in LOGGERS if normalize_name(name) == key), None)
            if match is None:
                raise unknown_name("logger", raw.strip(), list(LOGGERS))
            needs = LOGGERS[match]
            if needs is not None and importlib.util.find_spec(needs[0]) is None:
                raise ConfigError(f"--logger {match} needs the {needs[0]} package: {needs[1]}")
            if match not in chosen:
                chosen.append(match)
    return chosen


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"norm_options": {"groups": 8}}`` -> ``{"norm_options.groups": 8}`` (scalars as they are)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """``{"kind": "val", "accuracy": 0.9, "ci95": 0.01}`` -> ``{"val/accuracy": 0.9, "val/ci95": 0.01}``."""
    kind = str(record.get("kind", "metric"))
    return {
        f"{kind}/{key}": float(value)
        for key, value in record.items()
        if key not in ("kind", "episode") and isinstance(value, int | float) and not isinstance(value, bool)
    }


class CsvTracker:
    """``logs/csv/metrics.csv`` (one row per record, appended on resume) and ``logs/csv/config.json``."""

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(dict(config), indent=2, default=str) + "\n")
        self.path = folder / "metrics.csv"
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.file = self.path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.file.flush()

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.writer.writerow({**record, "episode": step})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardTracker:
    """Event files in ``logs/tensorboard`` (``tensorboard --logdir RUN_DIR/logs``): scalars
    ``train/loss``, ``train/accuracy``, ``val/accuracy``, ``val/ci95``, ``test/accuracy``, and the
    configuration as text."""

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        rows = "\n".join(f"| {k} | {v} |" for k, v in _flat(config).items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker:
    """A W&B run in offline mode under ``logs/wandb`` (``wandb sync`` uploads it later)."""

    def __init__(self, folder: Path, config: Mapping[str, Any], name: str) -> None:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project="fewnorm", name=name, dir=str(folder), mode="offline", config=dict(config)
        )

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.run.log(_scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run in a local file store ``logs/mlruns`` (``mlflow ui --backend-store-uri ...``)."""

    def __init__(self, folder: Path, config: Mapping[str, Any], name: str) -> None:
        import mlflow

        folder.mkdir(parents=True, exist_ok=True)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(folder.resolve().as_uri())
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in _scalars(record).items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class Trackers:
    """The chosen trackers of one run, opened at its first record (once its directory is its own).

    ``on_record`` is the training loop's hook; :meth:`finish` logs the test result and writes
    ``curves.png`` (when matplotlib is importable); :meth:`close` ends every tracker.
    """

    def __init__(self, names: Sequence[str], run_dir: Path, config: Mapping[str, Any]) -> None:
        self.names = list(names)
        self.run_dir = run_dir
        self.config = dict(config)
        self.open: list[Any] = []
        self.opened = False

    def _open(self) -> None:
        self.opened = True
        logs = self.run_dir / LOGS_DIR
        name = self.run_dir.name
        for logger in self.names:
            folder = logs / logger
            if logger == "csv":
                self.open.append(CsvTracker(folder, self.config))
            elif logger == "tensorboard":
                self.open.append(TensorBoardTracker(folder, self.config))
            elif logger == "wandb":
                self.open.append(WandbTracker(folder, self.config, name))
            elif logger == "mlflow":
                self.open.append(MlflowTracker(logs / "mlruns", self.config, name))

    def on_record(self, record: Mapping[str, Any]) -> None:
        """Log one ``metrics.jsonl`` record at its episode."""
        if not self.names:
            return
        if not self.opened:
            self._open()
        step = int(record.get("episode", 0))
        for tracker in self.open:
            tracker.log(record, step)

    def finish(self, summary: Mapping[str, Any], *, title: str | None = None) -> Path | None:
        """Log the test accuracy and its interval; write the run's ``curves.png``."""
        test = summary.get("test") or {}
        if isinstance(test, Mapping) and "accuracy" in test:
            episodes = int(self.config.get("episodes", 0))
            self.on_record(
                {"kind": "test", "episode": episodes, "accuracy": test["accuracy"], "ci95": test["ci95"]}
            )
        self.close()
        from fewnorm.plots import plot_run

        try:  # the run is finished and written: a figure that cannot be drawn must not fail it
            return plot_run(self.run_dir, title=title, label=str(self.config.get("norm", "")) or None)
        except Exception as exc:
            log.warning("curves.png not written: %s: %s", type(exc).__name__, exc)
            return None

    def close(self) -> None:
        while self.open:
            self.open.pop().close()
