"""``fewnorm study`` end to end on a synthetic store: reports, resumption, interruption, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fewnorm.data
from fewnorm.cli.main import app
from fewnorm.episodes import study_measure
from tests.cli.test_compare_cli import Calls
from tests.episodes.test_sampler import make_store

TINY = ["--set", "episodes=4", "--set", "val_every=2", "--set", "val_episodes=2", "--set", "test_episodes=6",
        "--set", "train_ways=5", "--set", "train_queries=2", "--set", "queries=3", "--set", "hidden=8",
        "--probe-seeds", "2", "--jobs", "1", "--threads", "1", "--no-progress"]  # fmt: skip
GRID = ["--norms", "bn,groupnorm,none", "--algos", "protonet", "--seeds", "2"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import torch

    def store(*args: Any, **kwargs: Any) -> Any:
        return make_store(size=28)

    monkeypatch.setattr(fewnorm.data, "load_split", store)  # every split is read through the data layer
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fewnorm.data, "load_split", lambda *a, **k: make_store(size=28))
        code, _, stderr = invoke("study", *GRID, *TINY, "--out", str(out))
    assert code == 0, stderr
    return out


def test_study_writes_both_reports_and_every_measurement(finished: Path) -> None:
    raw = json.loads((finished / "study.json").read_text())
    (cell,) = raw["cells"]
    assert cell["name"] == "protonet-5w1s" and cell["baseline"] == "batchnorm"
    assert len(cell["runs"]) == 6 and all(r["status"] == "ok" for r in cell["runs"])
    for run in cell["runs"]:
        assert len(run["one_at_a_time"]) == len(run["test_accuracies"]) == 6
    assert set(cell["memory_bytes"]) == {"batchnorm", "groupnorm", "none"}
    assert all(v > 0 for v in cell["memory_bytes"].values())
    assert {p["label"] for p in raw["probes"]} == {"batchnorm", "groupnorm", "none"}
    assert raw["command"] == f"fewnorm study {finished / 'spec.yaml'} --out {finished}"
    md = (finished / "report.md").read_text()
    html = (finished / "report.html").read_text()
    for text in ("Transductive exposure", "Spearman", "Δ vs batchnorm", "groupnorm", raw["command"]):
        assert text in md and text in html
    assert html.count("<svg") >= 3 and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_second_invocation_retrains_and_remeasures_nothing(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("measured again")

    for name in ("one_at_a_time", "step_memory", "probe_at_init"):
        monkeypatch.setattr(study_measure, name, refuse)
    before = (finished / "study.json").read_text()
    # the report's reproducing command: the merged spec it wrote
    command = json.loads(before)["command"].split()
    assert command[:2] == ["fewnorm", "study"]
    code, stdout, stderr = invoke(*command[1:], "--jobs", "1", "--threads", "1", "--no-progress")
    assert code == 0, stderr
    assert calls.runs == []
    after = json.loads((finished / "study.json").read_text())
    assert [c["runs"] for c in after["cells"]] == [c["runs"] for c in json.loads(before)["cells"]]
    assert "groupnorm" in stdout


def test_killed_study_loses_only_the_run_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    Calls(monkeypatch, stop=("groupnorm", 2))
    code, _, stderr = invoke("study", *GRID, *TINY, "--out", str(out))
    assert code == 130 and "re-run the same command" in stderr
    monkeypatch.undo()
    monkeypatch.setattr(fewnorm.data, "load_split", lambda *a, **k: make_store(size=28))
    calls = Calls(monkeypatch)
    code, _, stderr = invoke("study", *GRID, *TINY, "--out", str(out))
    assert code == 0, stderr
    # batchnorm's two seeds were finished: only groupnorm (resumed) and the rest train now
    assert [name for name, _ in calls.runs] == [
        "groupnorm-seed0",
        "groupnorm-seed1",
        "none-seed0",
        "none-seed1",
    ]
    assert calls.runs[0] == ("groupnorm-seed0", True)


def test_two_algorithms_and_a_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(
        "algos: [protonet, maml]\nnorms: [batchnorm, groupnorm]\nseeds: 1\n"
        "per_algo:\n  maml: {set: {inner_steps_test: 1}}\n"
    )
    out = tmp_path / "s"
    code, _, stderr = invoke("study", str(spec), *TINY, "--out", str(out))
    assert code == 0, stderr
    raw = json.loads((out / "study.json").read_text())
    assert [c["name"] for c in raw["cells"]] == ["protonet-5w1s", "maml-5w1s"]
    assert raw["cells"][1]["settings"]["base"]["inner_steps_test"] == 1
    assert len(raw["probes"]) == 2  # one per (backbone, normalizer with its options), shared by the cells


def test_a_directory_holding_another_study_is_refused(finished: Path) -> None:
    code, _, stderr = invoke("study", "--norms", "bn", *TINY, "--out", str(finished))
    assert code == 2 and "holds a study with another grid" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algos", "protonet,mamll"], "Did you mean 'maml'"),
        (["--norms", "batchnrm"], "Did you mean 'batchnorm'"),
        (["--settings", "5x1"], "is not WAYSwSHOTSs"),
        (["--shots", "1,a"], "--shots expects comma-separated integers"),
        (["--baseline", "layernorm", "--norms", "bn,gn"], "baseline"),
        (["--probe-seeds", "0"], "probe_seeds"),
        (["--set", "nonsense=1"], "nonsense"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("study", *args, "--out", str(tmp_path / "s"))
    assert code == 2, stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_unknown_spec_key_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text("normz: [batchnorm]\n")
    code, _, stderr = invoke("study", str(spec), "--out", str(tmp_path / "s"))
    assert code == 2 and "unknown key 'normz'" in stderr


def test_a_run_trained_again_is_measured_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    out = tmp_path / "s"
    grid = ["--norms", "bn,none", "--algos", "protonet", "--seeds", "1"]
    code, _, stderr = invoke("study", *grid, *TINY, "--out", str(out))
    assert code == 0, stderr
    shutil.rmtree(out / "protonet-5w1s" / "none-seed0")
    measured: list[Path] = []
    real = study_measure.one_at_a_time

    def counting(run_dir: Path, episodes: int | None = None) -> list[float]:
        measured.append(run_dir)
        return real(run_dir, episodes)

    monkeypatch.setattr(study_measure, "one_at_a_time", counting)
    calls = Calls(monkeypatch)
    code, _, stderr = invoke("study", *grid, *TINY, "--out", str(out))
    assert code == 0, stderr
    assert [name for name, _ in calls.runs] == ["none-seed0"]
    assert [p.name for p in measured] == ["none-seed0"]  # batchnorm's stored measurement still holds
