"""Run directories: resolved config, versions, metrics (JSON lines), best checkpoint, summary.

Every file is written atomically (temporary file in the same directory, fsync,
``os.replace``), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fewnorm.errors import FewnormError

CHECKPOINT = "best.pt"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
VERSIONS = "versions.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def versions() -> dict[str, Any]:
    """Versions that decide a run's numbers: Python, torch, fewnorm, loaded plugins."""
    import torch

    import fewnorm
    from fewnorm.norms.plugins import LOADED

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fewnorm": fewnorm.__version__,
        "platform": platform.platform(),
        "plugins": dict(LOADED),
    }


def default_run_dir(config_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config_name}"


class RunDir:
    """The files of one run under ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> None:
        if self.path.exists() and (self.path / SUMMARY).exists():
            raise FewnormError(
                f"run directory '{self.path}' already holds a finished run; choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def write_versions(self, extra: dict[str, Any] | None = None) -> None:
        data = versions() | (extra or {})
        atomic_write_text(self.path / VERSIONS, json.dumps(data, indent=2) + "\n")

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (appends of one short line are not torn on POSIX)."""
        with open(self.path / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path / CHECKPOINT)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(summary, indent=2) + "\n")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``best.pt`` from a run directory or a checkpoint file."""
    import torch

    file = path / CHECKPOINT if path.is_dir() else path
    if not file.is_file():
        raise FewnormError(f"no checkpoint at '{file}'; pass a run directory or a .pt checkpoint")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FewnormError(f"'{file}' is not a readable fewnorm checkpoint ({exc})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise FewnormError(f"'{file}' is not a fewnorm checkpoint (no config or model inside)")
    return state
