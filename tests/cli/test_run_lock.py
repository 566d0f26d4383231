"""A run directory is owned by one process: a second ``fewnorm train`` is refused in one line.

Process-level: the owner is another process (a real lock held across processes), the
refused command runs as ``python -m fewnorm.cli`` in a third one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fewnorm.runs import RunDir

HOLD = (
    "import sys; from pathlib import Path; from fewnorm.runs import RunDir\n"
    "with RunDir(Path(sys.argv[1])).lock():\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.readline()\n"
)
SHORT = ["--episodes", "3", "--val-every", "3", "--test-episodes", "5", "--no-progress", "--threads", "1"]


@pytest.fixture
def owned(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A run directory owned by another process until the test ends: a run past its first checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    RunDir(run).write_config({"norm": "batchnorm", "episodes": 3})
    RunDir(run).write_versions()
    (run / "last.pt").write_bytes(b"a checkpoint")
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None and owner.stdout.readline().strip() == "held"
    yield run, owner
    if owner.poll() is None:
        owner.communicate("\n", timeout=60)


def _fewnorm(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fewnorm.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("how", ["out", "resume"])
def test_a_second_process_is_refused_in_one_line(owned: tuple[Path, subprocess.Popen[str]], how: str) -> None:
    run, owner = owned
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    args = ["train", *SHORT, "--out", str(run)] if how == "out" else ["train", "--resume", str(run)]
    done = _fewnorm(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: run directory '{run}' is in use by another fewnorm process (pid {owner.pid}); "
        "wait for it to end, or choose another --out"
    ]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before  # nothing touched


def test_the_lock_goes_with_its_process(owned: tuple[Path, subprocess.Popen[str]]) -> None:
    run, owner = owned
    owner.kill()  # kill -9: no cleanup runs, the kernel drops the lock
    owner.wait(timeout=60)
    with RunDir(run).lock():
        pass
