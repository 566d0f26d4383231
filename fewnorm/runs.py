"""Run directories: resolved config, versions, metrics (JSON lines), checkpoints, summary.

Every file is written atomically (temporary file in the same directory, fsync,
``os.replace``), so an interrupted run never leaves a half-written file.

Files of a run directory:

- ``config.yaml``, ``versions.json``: what decides the numbers;
- ``metrics.jsonl``: one JSON line per training window and per validation;
- ``best.pt``: the model with the best validation accuracy so far;
- ``last.pt``: everything needed to continue (model, optimizer, scheduler, RNG
  states, episode counter, best-so-far, metrics so far), written at every
  validation and on Ctrl-C, removed once the run has finished;
- ``summary.json``: the result; ``"partial": true`` while a run is interrupted;
- ``diverged.json``: written when the loss became NaN/inf (the run is final).
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
LAST = "last.pt"
DIVERGED = "diverged.json"
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
        "torch_threads": torch.get_num_threads(),  # CPU results are bit-identical at equal counts
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
        """Make the directory for a fresh run; refuse one that holds a finished or resumable run."""
        status = run_status(self.path)
        if status == "finished":
            raise FewnormError(
                f"run directory '{self.path}' already holds a finished run; choose another --out"
            )
        if status in ("interrupted", "resumable"):
            raise FewnormError(
                f"run directory '{self.path}' holds an unfinished run; continue it with "
                f"`fewnorm train --resume {self.path}` or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (METRICS, DIVERGED, SUMMARY, CHECKPOINT, LAST):
            (self.path / stale).unlink(missing_ok=True)

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

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``records`` (resuming drops lines past the checkpoint)."""
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_torch_save(state, self.path / CHECKPOINT)

    def save_last(self, state: dict[str, Any]) -> None:
        """The resumable checkpoint; the previous one stays intact if this write is interrupted."""
        atomic_torch_save(state, self.path / LAST)

    def load_last(self) -> dict[str, Any]:
        """The resumable checkpoint, checked to be complete."""
        state = _torch_load(self.path / LAST, f"no resumable checkpoint in '{self.path}'")
        missing = sorted(RESUME_KEYS - set(state))
        if missing:
            raise FewnormError(
                f"'{self.path / LAST}' is not a resumable checkpoint (no {', '.join(missing)})"
            )
        return state

    def finish(self) -> None:
        """Drop the resumable checkpoint once the final summary is written."""
        (self.path / LAST).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(summary, indent=2) + "\n")

    def mark_diverged(self, message: str, episode: int) -> None:
        atomic_write_text(
            self.path / DIVERGED, json.dumps({"message": message, "episode": episode}, indent=2) + "\n"
        )


#: Keys every ``last.pt`` holds (see :func:`fewnorm.episodes.loop.train`).
RESUME_KEYS = frozenset(
    {"config", "model", "optimizer", "scheduler", "generator", "torch_rng", "episode", "records"}
)


def run_status(path: Path) -> str:
    """What ``path`` holds, from its files alone (nothing is unpickled).

    ``finished`` (a final summary), ``diverged``, ``interrupted`` (a partial summary
    and ``last.pt``), ``resumable`` (``last.pt`` only: killed), ``broken`` (files but
    nothing to resume from) or ``empty``.
    """
    if (path / SUMMARY).is_file():
        partial = _read_json(path / SUMMARY).get("partial", False)
        if not partial:
            return "finished"
        return "interrupted" if (path / LAST).is_file() else "broken"
    if (path / DIVERGED).is_file():
        return "diverged"
    if (path / LAST).is_file():
        return "resumable"
    return "broken" if path.is_dir() and any(path.iterdir()) else "empty"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"partial": True}  # unreadable: treat as unfinished
    return data if isinstance(data, dict) else {"partial": True}


def _torch_load(file: Path, missing: str) -> dict[str, Any]:
    import torch

    if not file.is_file():
        raise FewnormError(missing)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FewnormError(f"'{file}' is not a readable fewnorm checkpoint ({exc})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise FewnormError(f"'{file}' is not a fewnorm checkpoint (no config or model inside)")
    return state


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load ``best.pt`` from a run directory or a checkpoint file."""
    file = path / CHECKPOINT if path.is_dir() else path
    return _torch_load(file, f"no checkpoint at '{file}'; pass a run directory or a .pt checkpoint")
