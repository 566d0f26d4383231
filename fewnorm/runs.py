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
- ``diverged.json``: written when the loss became NaN/inf or grew by orders of
  magnitude (the run is final);
- ``.lock``: held (``flock``) by the process that trains the run, so that a second
  ``fewnorm train`` with the same ``--out`` or ``--resume`` is refused.

Files get the user's umask (:mod:`fewnorm.filemode`), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fewnorm.errors import FewnormError, RunDirError, RunLockedError, RunWriteError
from fewnorm.filemode import apply_umask

CHECKPOINT = "best.pt"
LAST = "last.pt"
DIVERGED = "diverged.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
VERSIONS = "versions.json"
LOCK = ".lock"
#: Set by ``fewnorm train --nproc`` for its workers: the launching process holds this run's lock.
LOCK_HELD_ENV = "FEWNORM_RUN_LOCK_HELD"

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The file gets the user's umask. A failed write (disk full, no permission) leaves the
    previous file intact and raises :class:`RunWriteError` naming the file and the reason.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError)):  # the folder, or one above, is a file
            exc = OSError(exc.errno, f"'{_file_in_the_way(path.parent)}' is a file, not a directory")
        raise RunWriteError(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            apply_umask(fh.fileno())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RunWriteError(path, exc) from None
        raise


def _file_in_the_way(folder: Path) -> Path:
    """The first of ``folder`` and its parents that exists (the file a mkdir ran into)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return folder


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

    def check_unowned(self) -> None:
        """Refuse, in one line, a run directory that another process owns now; changes nothing.

        Checked before what the files say, so that a live run is not called unfinished;
        :meth:`lock` decides for good.
        """
        import fcntl

        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return  # no lock file (or none readable): nobody has owned it, or lock() will say
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(fd) from None
        except OSError:
            return
        finally:
            os.close(fd)

    def _locked(self, fd: int, what: str = "run directory") -> RunLockedError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return RunLockedError(
            f"{what} '{self.path}' is in use by another fewnorm process"
            f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to end, "
            "or choose another --out"
        )

    @contextmanager
    def lock(self, what: str = "run directory") -> Iterator[None]:
        """Own the run directory for the block: a second process is refused in one line.

        An advisory ``flock`` on ``.lock`` inside the directory (made if missing), released
        when the block ends or the process dies (a killed run never leaves a stale lock).
        """
        import fcntl

        created = not self.path.exists()
        make_run_dir(self.path)
        file = self.path / LOCK
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunWriteError(file, exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked(fd, what) from None
            except OSError as exc:  # a filesystem without flock (some network mounts): run, and say so
                log.warning(
                    "cannot lock '%s' (%s): nothing stops another process from using %s at the same time",
                    file,
                    exc.strerror or exc,
                    self.path,
                )
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                if created and [p.name for p in self.path.iterdir()] == [LOCK]:
                    file.unlink()  # a run that failed before writing anything leaves no folder
                    self.path.rmdir()
        finally:
            os.close(fd)  # releases the lock

    def prepare(self) -> None:
        """Make the directory for a fresh run (see :meth:`check_fresh`); drop a stopped run's files."""
        self.check_fresh()
        make_run_dir(self.path)
        for stale in (METRICS, DIVERGED, SUMMARY, CHECKPOINT, LAST):
            (self.path / stale).unlink(missing_ok=True)

    def check_fresh(self) -> None:
        """Refuse, in one line, a path whose files a fresh run would clobber; changes nothing.

        Refused: a finished, diverged or resumable run, a file, and a directory holding
        files of anything but a fewnorm run. Accepted: a new or empty directory, and a run
        stopped before its first checkpoint (rerunning its command starts it afresh).
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(
                f"--out '{self.path}' is a file, not a directory; choose a directory for the run"
            )
        status = run_status(self.path)
        if status == "finished":
            raise RunDirError(
                f"run directory '{self.path}' already holds a finished run; choose another --out"
            )
        if status == "diverged":
            raise RunDirError(
                f"run directory '{self.path}' holds a diverged run (see {DIVERGED}); choose another --out"
            )
        if status in ("interrupted", "resumable"):
            raise RunDirError(
                f"run directory '{self.path}' holds an unfinished run; continue it with "
                f"`fewnorm train --resume {self.path}` or choose another --out"
            )
        foreign = _foreign_files(self.path) if self.path.is_dir() else []
        if foreign:
            raise RunDirError(
                f"--out '{self.path}' is a directory that holds no fewnorm run but other files "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                "choose a new or empty directory"
            )

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        atomic_write_text(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def write_versions(self, extra: dict[str, Any] | None = None) -> None:
        data = versions() | (extra or {})
        atomic_write_text(self.path / VERSIONS, json.dumps(data, indent=2) + "\n")

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (appends of one short line are not torn on POSIX)."""
        try:
            with open(self.path / METRICS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise RunWriteError(self.path / METRICS, exc) from None

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
        state = _torch_load(self.path / LAST, no_checkpoint_message(self.path))
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


def make_run_dir(path: Path) -> None:
    """Create the run directory ``path``; a file there, or no permission, is one clear line."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out '{path}' is a file, not a directory; choose a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        in_the_way = _file_in_the_way(path)
        raise RunDirError(
            f"cannot create run directory '{path}': '{in_the_way}' is a file, not a directory"
        ) from None
    except OSError as exc:
        raise RunDirError(f"cannot create run directory '{path}': {exc.strerror or exc}") from None


def _foreign_files(path: Path) -> list[str]:
    """Names in ``path`` that a fresh run would clobber or mix with, unless it is a fewnorm run.

    A run stopped before its first checkpoint (its ``versions.json`` names fewnorm) has
    nothing to lose; the lock file and temporary files of atomic writes never count.
    """
    names = sorted(
        p.name
        for p in path.iterdir()
        if p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )
    if not names:
        return []
    try:
        recorded = json.loads((path / VERSIONS).read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and "fewnorm" in recorded:
        return []
    return names


def no_checkpoint_message(path: Path) -> str:
    """Why ``path`` cannot be resumed when it has no ``last.pt``, and what to do instead."""
    message = f"no resumable checkpoint in '{path}'"
    if not (path / CONFIG).is_file():
        return message
    command = rerun_command(path)
    return (
        f"{message}: the run stopped before its first checkpoint (written at each validation), "
        f"so there is nothing to continue; rerunning the same command starts it afresh: `{command}`"
    )


def rerun_command(path: Path) -> str:
    """A command that starts the run recorded in ``path`` afresh (its config and plugins)."""
    import shlex

    import yaml

    try:
        config = yaml.safe_load((path / CONFIG).read_text())
    except (OSError, yaml.YAMLError):  # unreadable: the plain form
        config = None
    words = ["fewnorm", "train"]
    world = config.get("world_size") if isinstance(config, dict) else None
    if isinstance(world, int) and world > 1:
        words += ["--nproc", str(world)]
    words += [f"--plugin={target}" for target in recorded_plugin_targets(path)]
    words += ["--config", str(path / CONFIG), "--out", str(path)]
    return shlex.join(words)


def recorded_value(path: Path, key: str) -> Any:
    """``key`` of the run's ``versions.json`` (None when missing or unreadable)."""
    try:
        recorded = json.loads((path / VERSIONS).read_text())
    except (OSError, ValueError):
        return None
    return recorded.get(key) if isinstance(recorded, dict) else None


def recorded_plugins(path: Path) -> dict[str, str]:
    """The plugins loaded when the run in ``path`` was trained: name -> source (``versions.json``)."""
    plugins = recorded_value(path, "plugins")
    return {str(k): str(v) for k, v in plugins.items()} if isinstance(plugins, dict) else {}


def plugin_target(source: str) -> str | None:
    """The ``--plugin`` value that loads ``source`` again (``file:PATH``, ``module:NAME``); None else."""
    for prefix in ("file:", "module:"):
        if source.startswith(prefix):
            return source.removeprefix(prefix)
    return None  # an installed distribution's entry point: loaded without --plugin


def recorded_plugin_targets(path: Path) -> list[str]:
    """The ``--plugin`` values the run in ``path`` was trained with."""
    targets = (plugin_target(s) for s in recorded_plugins(path).values())
    return [t for t in targets if t is not None]


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
    return _torch_load(file, _no_best_message(path, file))


def _no_best_message(path: Path, file: Path) -> str:
    """Why there is no ``best.pt`` to score: a run that has not validated yet, or no run at all."""
    missing = f"no checkpoint at '{file}'"
    if not (path.is_dir() and (path / CONFIG).is_file()):
        return f"{missing}; pass a run directory or a .pt checkpoint"
    if run_status(path) == "diverged":
        return f"{missing}: the run diverged before its first validation (see {DIVERGED})"
    try:
        RunDir(path).check_unowned()
    except RunLockedError:
        return f"{missing}: the run is training and has not reached its first validation, which writes it"
    return f"{missing}: the run stopped before its first validation, which writes it"
