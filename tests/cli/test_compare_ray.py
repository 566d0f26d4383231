"""``fewnorm compare --engine ray`` on a local Ray instance: parity with the local engine, retries."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.episodes import loop
from fewnorm.episodes import sweep_ray as compare_ray
from fewnorm.episodes.sweep import Task

VAL_EVERY = 10
TINY = ["--norms", "bn,groupnorm", "--norm-opt", "gn:groups=2", "--episodes", "30",
        "--val-every", str(VAL_EVERY), "--val-episodes", "2", "--test-episodes", "10",
        "--train-ways", "5", "--train-queries", "2", "--queries", "3", "--set", "hidden=8",
        "--threads", "1", "--no-progress", "--no-plots"]  # fmt: skip


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """One local Ray instance (2 CPUs) for the module, shut down afterwards."""
    ray = pytest.importorskip("ray")
    # "local": a new instance even where RAY_ADDRESS or a `ray start` cluster is around
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, omniglot_root: Path) -> Path:
    """The same sweep on the local engine, in this process (torch's thread count restored after)."""
    import torch

    out = tmp_path_factory.mktemp("local") / "sweep"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWNORM_DATA", str(omniglot_root))
        code, _, stderr = invoke("compare", *TINY, "--jobs", "1", "--out", str(out))
    torch.set_num_threads(threads)
    assert code == 0, stderr
    return out


def _rows(out: Path) -> list[dict[str, Any]]:
    """``results.json``'s rows in order, without their timings."""
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k != "ms_per_episode"} for r in rows]


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "ms_per_episode"} for r in csv.DictReader(fh)]


def _same_results(out: Path, reference: Path) -> None:
    assert _rows(out) == _rows(reference)
    assert _csv(out) == _csv(reference)
    for run in ("batchnorm-seed0", "groupnorm-seed0"):
        assert (out / run / "metrics.jsonl").read_bytes() == (reference / run / "metrics.jsonl").read_bytes()


@pytest.mark.data
def test_ray_sweep_matches_the_local_engine(
    ray_session: Any, local_sweep: Path, data_env: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    code, stdout, stderr = invoke("compare", *TINY, "--engine", "ray", "--out", str(out))
    assert code == 0, stderr
    assert all(r["status"] == "ok" and r["episodes"] == 10 for r in _rows(out))
    _same_results(out, local_sweep)
    assert "Δ vs batchnorm" in stdout and "groupnorm" in stdout
    code, _, stderr = invoke("compare", *TINY, "--engine", "ray", "--out", str(out))
    assert code == 0 and "2/2 runs already done" in stderr  # resumable as the local engine


def killing_hub(log: Path, victim: str, validation: int) -> type[compare_ray.Hub]:
    """A hub that logs every event and SIGKILLs ``victim``'s worker as its ``validation``-th one ends.

    Episode ticks are throttled, but the last event of a validation always reaches the hub,
    and the worker waits for the answer: with ``validation=2`` the kill lands after the
    checkpoint of episode ``VAL_EVERY`` and before that of episode ``2 * VAL_EVERY``.
    """

    class KillingHub(compare_ray.Hub):
        def __init__(self) -> None:
            super().__init__()
            self.pids: dict[str, int] = {}
            self.validations = 0

        def report(self, event: Any) -> bool:
            with open(log, "a") as fh:
                fh.write(json.dumps(event) + "\n")
            kind, name = event[0], event[1]
            if kind == "worker":
                self.pids[name] = event[2]
            elif kind == "stage" and name == victim and event[2] == "validate" and event[3] == event[4]:
                self.validations += 1
                if self.validations == validation:
                    os.kill(self.pids[name], signal.SIGKILL)
            return super().report(event)

    return KillingHub


@pytest.mark.data
def test_killed_worker_is_retried_and_resumes(
    ray_session: Any, local_sweep: Path, data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "events.jsonl"
    monkeypatch.setattr(compare_ray, "Hub", killing_hub(log, "groupnorm-seed0", validation=2))
    out = tmp_path / "ray"
    code, _, stderr = invoke("compare", *TINY, "--engine", "ray", "--out", str(out))
    assert code == 0, stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    mine = [e for e in events if e[1] == "groupnorm-seed0"]
    attempts = [i for i, e in enumerate(mine) if e[0] == "worker"]
    assert len(attempts) == 2 and mine[attempts[0]][2] != mine[attempts[1]][2]  # retried in a new process
    stages = [e for e in mine[: attempts[1]] if e[0] == "stage" and e[2] == "validate" and e[3] == e[4]]
    assert len(stages) == 2  # killed as the validation of episode 20 ended, before its checkpoint
    first_episode = next(e[2] for e in mine[attempts[1] :] if e[0] == "episode")
    assert first_episode == VAL_EVERY + 1  # the retry resumed from that checkpoint, not from scratch
    assert [e[2] for e in mine if e[0] == "done"] == ["ok"]
    _same_results(out, local_sweep)  # bit-identical to the sweep that was never killed


@pytest.mark.data
def test_retry_after_the_run_finished_does_not_train(
    ray_session: Any, local_sweep: Path, data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(loop, "train", no_training)
    hub = ray_session.remote(num_cpus=0)(compare_ray.Hub).remote()
    run = local_sweep / "groupnorm-seed0"
    task = Task("groupnorm-seed0", {}, str(run), resume=False)  # as submitted before it finished
    result = compare_ray.train_on_worker(task, hub, 1, [], os.getcwd(), {})
    assert result == ("groupnorm-seed0", "ok", "")
    assert [e[0] for e in ray_session.get(hub.drain.remote())] == ["worker", "done"]


@pytest.mark.data
def test_sweep_directory_missing_on_the_worker_is_one_clear_failure(ray_session: Any, tmp_path: Path) -> None:
    hub = ray_session.remote(num_cpus=0)(compare_ray.Hub).remote()
    task = Task("none-seed0", {}, str(tmp_path / "elsewhere" / "none-seed0"), resume=False)
    _, status, message = compare_ray.train_on_worker(task, hub, 1, [], os.getcwd(), {})
    assert status == "failed" and "is not visible on" in message and "shared filesystem" in message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "unknown --engine 'spark'; known engines: local, ray"),
        (["--address", "auto"], "--address names a Ray cluster: use it with --engine ray"),
        (["--engine", "ray", "--jobs", "2"], "--jobs is for the local engine"),
        (["--engine", "ray", "--device", "cuda:1"], "pass --device cuda, not 'cuda:1'"),
    ],
)
def test_bad_engine_options_are_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    if "ray" in args:
        pytest.importorskip("ray")
    code, stdout, stderr = invoke("compare", *TINY, *args, "--out", str(tmp_path / "bad"))
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr


def test_ray_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code, _, stderr = invoke("compare", *TINY, "--engine", "ray", "--out", str(tmp_path / "x"))
    assert code == 2
    assert stderr.strip() == "error: the ray engine needs Ray: pip install 'fewnorm[ray]'"
