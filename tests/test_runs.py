"""Run directories as files: modes, write failures, what a fresh run refuses, the lock."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fewnorm import runs
from fewnorm.errors import RunDirError, RunLockedError, RunWriteError
from fewnorm.filemode import current_umask
from fewnorm.runs import RunDir


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_get_the_users_umask(umask: int, tmp_path: Path) -> None:
    assert current_umask() == umask
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.prepare()
        run.write_config({"norm": "batchnorm"})
        run.write_versions()
        run.log({"kind": "train"})
        run.save_last({"config": {}, "model": {"w": torch.ones(1)}})
        run.write_summary({"partial": True})
    expected = 0o666 & ~umask
    for name in (runs.CONFIG, runs.VERSIONS, runs.METRICS, runs.LAST, runs.SUMMARY, runs.LOCK):
        assert _mode(run.path / name) == expected, name


def test_a_store_written_to_the_cache_gets_the_users_umask(umask: int, tmp_path: Path) -> None:
    from tests.episodes.test_sampler import make_store

    make_store(size=8).save(tmp_path / "store.pt")
    assert _mode(tmp_path / "store.pt") == 0o666 & ~umask


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EACCES, "Permission denied"),
        (errno.EROFS, "Read-only file system"),
    ],
)
def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.save_last({"config": {}, "model": {"w": torch.ones(3)}, "episode": 2})

    def failing(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(RunWriteError, match=rf"cannot write '.*last\.pt': {reason}$"):
        run.save_last({"config": {}, "model": {"w": torch.zeros(3)}, "episode": 4})
    monkeypatch.undo()
    assert torch.load(run.path / runs.LAST, weights_only=True)["episode"] == 2
    assert [p.name for p in run.path.iterdir()] == [runs.LAST]  # no temporary file left behind


def test_metrics_that_cannot_be_appended_are_one_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    (tmp_path / "run" / runs.METRICS).mkdir(parents=True)  # open(..., "a") fails
    with pytest.raises(RunWriteError, match=r"metrics\.jsonl"):
        run.log({"kind": "train"})


def _diverged_run(path: Path) -> Path:
    path.mkdir()
    (path / runs.CONFIG).write_text("norm: batchnorm\n")
    (path / runs.VERSIONS).write_text(json.dumps({"fewnorm": "0"}))
    (path / runs.DIVERGED).write_text(json.dumps({"message": "diverged", "episode": 5}))
    return path


def test_a_fresh_run_refuses_what_it_would_clobber(tmp_path: Path) -> None:
    diverged = _diverged_run(tmp_path / "diverged")
    with pytest.raises(RunDirError, match="holds a diverged run"):
        RunDir(diverged).prepare()
    assert (diverged / runs.DIVERGED).is_file()
    file = tmp_path / "file"
    file.write_text("precious")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        RunDir(file).prepare()
    with pytest.raises(RunDirError, match="cannot create run directory"):
        RunDir(file / "run").prepare()
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / runs.CONFIG).write_text("someone else's")
    with pytest.raises(RunDirError, match=r"holds no fewnorm run but other files \(config\.yaml\)"):
        RunDir(foreign).prepare()
    assert (foreign / runs.CONFIG).read_text() == "someone else's"


def test_a_fresh_run_takes_an_empty_directory_and_a_run_stopped_before_its_first_checkpoint(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir(empty).prepare()
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / runs.CONFIG).write_text("norm: batchnorm\n")
    (stopped / runs.VERSIONS).write_text(json.dumps({"fewnorm": "0"}))
    (stopped / runs.METRICS).write_text('{"kind": "train"}\n')
    RunDir(stopped).prepare()
    assert not (stopped / runs.METRICS).exists()


def test_no_checkpoint_says_that_rerunning_starts_afresh(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / runs.CONFIG).write_text("norm: clinorm\nworld_size: 2\n")
    (stopped / runs.VERSIONS).write_text(
        json.dumps({"fewnorm": "0", "plugins": {"p.py": "file:/abs/p.py", "example": "dist==1"}})
    )
    message = runs.no_checkpoint_message(stopped)
    assert "stopped before its first checkpoint" in message
    assert "rerunning the same command starts it afresh" in message
    assert (
        f"fewnorm train --nproc 2 --plugin=/abs/p.py --config {stopped}/config.yaml --out {stopped}"
        in message
    )
    assert (
        runs.no_checkpoint_message(tmp_path / "nothing")
        == f"no resumable checkpoint in '{tmp_path / 'nothing'}'"
    )


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():
        (run.path / runs.CONFIG).write_text("norm: batchnorm\n")
        with (
            pytest.raises(
                RunLockedError,
                match=rf"'{run.path}' is in use by another fewnorm process \(pid {os.getpid()}\)",
            ),
            RunDir(run.path).lock(),
        ):
            pass
    with RunDir(run.path).lock():  # released at the end of the block
        pass


def test_a_lock_on_a_run_that_wrote_nothing_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RunDir(tmp_path / "run").lock():
        raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "run").exists()


def test_a_run_without_best_pt_says_why(tmp_path: Path) -> None:
    from fewnorm.errors import FewnormError

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_config({"norm": "batchnorm"})
    with pytest.raises(FewnormError, match="stopped before its first validation, which writes it"):
        runs.load_checkpoint(run.path)
    with (
        run.lock(),
        pytest.raises(FewnormError, match="is training and has not reached its first validation"),
    ):
        runs.load_checkpoint(run.path)
    (run.path / runs.DIVERGED).write_text("{}")
    with pytest.raises(FewnormError, match=r"diverged before its first validation \(see diverged\.json\)"):
        runs.load_checkpoint(run.path)
    with pytest.raises(FewnormError, match=r"; pass a run directory or a \.pt checkpoint"):
        runs.load_checkpoint(tmp_path)


def test_a_filesystem_without_locks_runs_unguarded_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunDir(tmp_path / "run").lock():
        (tmp_path / "run" / runs.CONFIG).write_text("norm: batchnorm\n")
    assert "nothing stops another process" in caplog.text
