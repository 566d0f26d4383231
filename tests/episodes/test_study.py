"""A tiny real study on omniglot-minimal: two normalizers, ProtoNet, one seed, a few episodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewnorm.cli.study import sweep_engine
from fewnorm.episodes.study import run_study
from fewnorm.study.spec import build_study
from fewnorm.study.write import write_reports
from tests.cli.test_compare_cli import Calls

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_tiny_study_end_to_end(data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    torch.set_num_threads(1)
    spec = build_study(
        {"norms": ["batchnorm", "groupnorm"], "algos": ["protonet"], "seeds": 1, "probe_seeds": 2,
         "transductive_episodes": 20,
         "set": {"episodes": 30, "val_every": 30, "val_episodes": 10, "test_episodes": 40}},
        {},
    )  # fmt: skip
    engine = sweep_engine("local", 1, 1, [], False, None)
    raw = run_study(spec, tmp_path / "s", engine)
    (cell,) = raw["cells"]
    for run in cell["runs"]:
        assert run["status"] == "ok" and len(run["test_accuracies"]) == 40 and len(run["one_at_a_time"]) == 20
        assert sum(run["test_accuracies"]) / 40 > 0.4  # well above chance (0.2) after 30 episodes
    bn = next(r for r in cell["runs"] if r["label"] == "batchnorm")
    gn = next(r for r in cell["runs"] if r["label"] == "groupnorm")
    assert gn["one_at_a_time"] == pytest.approx(gn["test_accuracies"][:20])  # per-sample: not transductive
    assert bn["one_at_a_time"] != bn["test_accuracies"][:20]  # batch statistics of one query
    report = write_reports(raw, tmp_path / "s")
    assert [r.label for r in report.cells[0].rows] and (tmp_path / "s" / "report.html").is_file()

    calls = Calls(monkeypatch)
    again = run_study(spec, tmp_path / "s", engine)
    assert calls.runs == [] and again["cells"] == raw["cells"]
