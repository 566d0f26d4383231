"""``torchrun -m fewnorm.cli train`` and ``fewnorm train --nproc``: refusals in one line, runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.config import RunConfig

#: MAML on omniglot-minimal, meta-batch 4, four outer steps: what the issue runs, only shorter.
SHORT = [
    "train", "--algo", "maml", "--meta-batch", "4", "--episodes", "4", "--val-every", "2",
    "--val-episodes", "5", "--test-episodes", "7", "--inner-steps-test", "2", "--hidden", "8",
    "--no-progress", "--json",
]  # fmt: skip


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


def _run_dir(tmp_path: Path, world_size: int | None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(algo="maml", meta_batch=4, world_size=world_size).model_dump()
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def _torchrun(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world_size))


def _one_error_line(code: int, stderr: str) -> str:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_resume_without_torchrun_of_a_two_process_run_is_refused(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, 2)
    line = _one_error_line(*invoke("train", "--resume", str(run)))
    assert "trained on 2 processes (torchrun) and cannot continue on one process without torchrun" in line
    assert f"`fewnorm train --nproc 2 --resume {run}`" in line


def test_resume_on_another_number_of_processes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_dir(tmp_path, 2)
    line = _one_error_line(*invoke("train", "--nproc", "4", "--resume", str(run)))  # before launching
    assert "cannot continue on 4 processes" in line
    _torchrun(monkeypatch, rank=0, world_size=3)
    assert "cannot continue on 3 processes" in _one_error_line(*invoke("train", "--resume", str(run)))


def test_a_one_process_run_does_not_resume_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_dir(tmp_path, None)
    _torchrun(monkeypatch, rank=0, world_size=2)
    line = _one_error_line(*invoke("train", "--resume", str(run)))
    assert "without torchrun and cannot continue on 2 processes" in line
    assert f"`fewnorm train --resume {run}`" in line


def test_nproc_under_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun(monkeypatch, rank=0, world_size=2)
    assert "drop --nproc" in _one_error_line(*invoke("train", "--nproc", "2"))


def test_episodes_must_split_evenly_over_the_processes() -> None:
    line = _one_error_line(*invoke("train", "--algo", "protonet", "--episodes-per-step", "3", "--nproc", "2"))
    assert "meta_batch 3 (--meta-batch / --episodes-per-step) must be a multiple of world_size 2" in line


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "fewnorm.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout


def _summary(prefix: list[str], out: Path, *extra: str) -> dict[str, Any]:
    command = [*prefix, *SHORT, *extra, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.usefixtures("data_env")
def test_torchrun_two_processes_match_one_and_the_nproc_shortcut(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node"]
    two = _summary([*torchrun, "2", "-m", "fewnorm.cli"], tmp_path / "two")
    one = _summary([*torchrun, "1", "-m", "fewnorm.cli"], tmp_path / "one")
    shortcut = _summary([sys.executable, "-m", "fewnorm.cli"], tmp_path / "shortcut", "--nproc", "2")
    assert two["config"]["world_size"] == shortcut["config"]["world_size"] == 2
    assert one["config"]["world_size"] == 1
    for key in ("best_val_accuracy", "best_val_episode", "test"):  # the shortcut is torchrun itself
        assert shortcut[key] == two[key]
    metrics = (tmp_path / "two" / "metrics.jsonl").read_text()
    assert (tmp_path / "shortcut" / "metrics.jsonl").read_text() == metrics
    assert two["best_val_accuracy"] == pytest.approx(one["best_val_accuracy"], abs=1e-6)
    assert two["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=1e-6)
    assert two["test"]["ci95"] == pytest.approx(one["test"]["ci95"], abs=1e-6)
