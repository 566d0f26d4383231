"""``fewnorm compare`` end to end on a synthetic store: table, files, resumption, divergence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.episodes import loop
from tests.episodes.test_sampler import make_store

TINY = ["--episodes", "4", "--val-every", "2", "--val-episodes", "2", "--test-episodes", "5",
        "--train-ways", "5", "--train-queries", "2", "--queries", "3", "--set", "hidden=8",
        "--jobs", "1", "--threads", "1", "--no-progress"]  # fmt: skip
NORMS = ["--norms", "bn,groupnorm,none", "--norm-opt", "gn:groups=2"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


class Calls:
    """Counts (and can interrupt) the training runs the sweep starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop: tuple[str, int] | None = None) -> None:
        self.runs: list[tuple[str, bool]] = []
        real = loop.train

        def train(config: Any, run_dir: Path, **kw: Any) -> Any:
            self.runs.append((Path(run_dir).name, kw.get("resume", False)))
            inner = kw["on_episode"]

            def on_episode(log: loop.EpisodeLog) -> None:
                inner(log)
                if stop and config.norm == stop[0] and log.episode == stop[1]:
                    raise KeyboardInterrupt

            return real(config, run_dir, **(kw | {"on_episode": on_episode}))

        monkeypatch.setattr(loop, "train", train)


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The synthetic store; torch's thread count (``--threads 1`` sets it) restored afterwards."""
    import torch

    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``results.json`` without their timings."""
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {r["label"]: {k: v for k, v in r.items() if k != "ms_per_episode"} for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "ref"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
        code, _, stderr = invoke("compare", *NORMS, *TINY, "--out", str(out))
    assert code == 0, stderr
    return out


def test_sweep_prints_table_and_writes_results(reference: Path) -> None:
    rows = _rows(reference)
    assert set(rows) == {"batchnorm", "groupnorm", "none"}
    assert all(r["status"] == "ok" and r["episodes"] == 5 for r in rows.values())
    assert rows["batchnorm"]["difference"] is None  # the baseline
    assert rows["groupnorm"]["difference"] == pytest.approx(
        rows["groupnorm"]["accuracy"] - rows["batchnorm"]["accuracy"]
    )
    accs = [r["accuracy"] for r in json.loads((reference / "results.json").read_text())["rows"]]
    assert accs == sorted(accs, reverse=True)
    assert "label,norm,options,status" in (reference / "results.csv").read_text()
    for name in ("accuracy.png", "curves.png", "sweep.json"):
        assert (reference / name).is_file()
    config = (reference / "groupnorm-seed0" / "config.yaml").read_text()
    assert "groups: 2" in config and "hidden: 8" in config


def test_second_invocation_skips_finished_runs(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    mtimes = {p: p.stat().st_mtime_ns for p in reference.glob("*/summary.json")}
    code, stdout, stderr = invoke("compare", *NORMS, *TINY, "--out", str(reference), "--no-plots")
    assert code == 0, stderr
    assert calls.runs == []  # nothing retrained
    assert "3/3 runs already done" in stderr
    assert {p: p.stat().st_mtime_ns for p in reference.glob("*/summary.json")} == mtimes
    assert "Δ vs batchnorm" in stdout and "groupnorm" in stdout


def test_interrupted_sweep_resumes_only_what_is_missing(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s"
    calls = Calls(monkeypatch, stop=("groupnorm", 3))
    code, _, stderr = invoke("compare", *NORMS, *TINY, "--out", str(out), "--no-plots")
    assert code == 130
    assert "re-run the same command to resume" in stderr
    assert calls.runs == [("batchnorm-seed0", False), ("groupnorm-seed0", False)]
    calls = Calls(monkeypatch)
    code, _, stderr = invoke("compare", *NORMS, *TINY, "--out", str(out), "--no-plots")
    assert code == 0, stderr
    assert calls.runs == [("groupnorm-seed0", True), ("none-seed0", False)]  # batchnorm skipped
    assert _rows(out) == _rows(reference)  # identical to the uninterrupted sweep
    ref_metrics = (reference / "groupnorm-seed0" / "metrics.jsonl").read_bytes()
    assert (out / "groupnorm-seed0" / "metrics.jsonl").read_bytes() == ref_metrics


def test_broken_run_is_restarted(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    (out / "none-seed0").mkdir(parents=True)
    (out / "none-seed0" / "last.pt").write_bytes(b"torn")
    (out / "none-seed0" / "metrics.jsonl").write_text("{}\n")
    code, _, stderr = invoke("compare", "--norms", "none", *TINY, "--out", str(out), "--no-plots")
    assert code == 0, stderr
    assert _rows(out)["none"]["accuracy"] == _rows(reference)["none"]["accuracy"]


def test_divergence_is_marked_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewnorm.episodes.algorithms import ProtoNet
    from fewnorm.episodes.protonet import StepResult

    real_step = ProtoNet.train_step

    def flaky(self: ProtoNet, *args: Any) -> StepResult:
        result = real_step(self, *args)
        return StepResult(float("nan"), 0.0) if self.config.norm == "groupnorm" else result

    monkeypatch.setattr(ProtoNet, "train_step", flaky)
    out = tmp_path / "s"
    code, stdout, stderr = invoke("compare", *NORMS, *TINY, "--out", str(out), "--json")
    assert code == 0, stderr
    rows = {r["label"]: r for r in json.loads(stdout)["rows"]}
    assert rows["groupnorm"]["status"] == "diverged"
    assert "episode 1 with normalizer 'groupnorm'" in rows["groupnorm"]["message"]
    assert rows["batchnorm"]["status"] == rows["none"]["status"] == "ok"
    assert [r["label"] for r in json.loads(stdout)["rows"]][-1] == "groupnorm"
    calls = Calls(monkeypatch)
    code, stdout, _ = invoke("compare", *NORMS, *TINY, "--out", str(out), "--no-plots")
    assert code == 0 and calls.runs == []  # a diverged run is a result: not retried
    assert "diverged" in stdout


def test_sweep_file_and_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text("norms: [none, {norm: groupnorm, label: gn1, options: {groups: 1}}]\nseeds: [4, 5]\n")
    out = tmp_path / "o"
    code, stdout, stderr = invoke("compare", "--sweep", str(sweep), *TINY, "--out", str(out), "--json",
                                  "--no-plots")  # fmt: skip
    assert code == 0, stderr
    rows = {r["label"]: r for r in json.loads(stdout)["rows"]}
    assert rows["gn1"]["seeds"] == 2 and rows["gn1"]["episodes"] == 10
    assert rows["gn1"]["seed_ci95"] is not None
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "gn1-seed4", "gn1-seed5", "none-seed4", "none-seed5"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--norms", "bn,grupnorm"], "unknown normalizer 'grupnorm'. Did you mean 'groupnorm'?"),
        (["--norms", "bn", "--norm-opt", "groups=2"], "--norm-opt expects name:key=value"),
        (["--norms", "bn", "--norm-opt", "gn:groups=2"], "unknown normalizer in this sweep 'gn'"),
        (["--norms", "bn,gn", "--norm-opt", "gn:groups=7"], "positive divisor"),
        (["--norms", "bn", "--baseline", "swbn"], "unknown baseline (not in this sweep) 'swbn'"),
        (["--norms", "bn", "--ways", "30"], "need 30 classes"),
        (["--norms", "bn", "--set", "wayz=3"], "unknown key 'wayz'"),
        (["--norms", "bn", "--jobs", "-1"], "--jobs must be 0"),
        (["--norms", "bn", "--threads", "0"], "--threads must be positive, got 0"),
        (["--norms", "bn", "--device", "gpu"], "unknown device 'gpu'; use cpu, cuda or cuda:N"),
        (["--norms", "bn", "--set", "head=linear"], "protonet has no head"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, stdout, stderr = invoke("compare", *TINY, *args, "--out", str(tmp_path / "bad"))
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr


def test_out_naming_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("precious")
    code, _, stderr = invoke("compare", *NORMS, *TINY, "--out", str(tmp_path / "file"))
    assert code == 2 and f"'{tmp_path / 'file'}' is a file, not a directory" in stderr
    assert len(stderr.strip().splitlines()) == 1 and (tmp_path / "file").read_text() == "precious"


def test_a_run_that_another_process_trains_is_not_deleted(tmp_path: Path) -> None:
    from fewnorm.config import RunConfig
    from fewnorm.episodes.sweep import Task, run_task
    from fewnorm.runs import RunDir

    run = RunDir(tmp_path / "none-seed0")
    with run.lock():
        (run.path / "metrics.jsonl").write_text("{}\n")
        task = Task("none-seed0", RunConfig(norm="none").model_dump(), str(run.path), resume=False)
        name, status, message = run_task(task, report=lambda event: None)
        assert (name, status) == ("none-seed0", "failed") and "in use by another fewnorm process" in message
        assert (run.path / "metrics.jsonl").read_text() == "{}\n"


def test_a_sweep_directory_in_use_is_refused(tmp_path: Path) -> None:
    from fewnorm.runs import RunDir

    with RunDir(tmp_path / "s").lock("sweep directory"):
        code, _, stderr = invoke("compare", *NORMS, *TINY, "--out", str(tmp_path / "s"))
    assert code == 2
    assert f"error: sweep directory '{tmp_path / 's'}' is in use by another fewnorm process" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_out_holding_another_sweep_is_refused(reference: Path) -> None:
    code, _, stderr = invoke("compare", *NORMS, *TINY, "--episodes", "6", "--out", str(reference))
    assert code == 2 and "holds a sweep with other settings" in stderr


@pytest.mark.slow
@pytest.mark.data
def test_parallel_jobs_on_real_data(data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # real data: spawned workers would not see the synthetic store anyway
    monkeypatch.setenv("FEWNORM_DATA", str(data_env))
    args = [a for a in TINY if a not in ("--jobs", "--threads", "1")]
    code, stdout, stderr = invoke(
        "compare", *NORMS, *args, "--jobs", "2", "--out", str(tmp_path / "p"), "--json"
    )
    assert code == 0, stderr
    rows = {r["label"]: r for r in json.loads(stdout)["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
