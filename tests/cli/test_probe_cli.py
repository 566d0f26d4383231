"""``fewnorm probe`` end to end on a synthetic store: table, JSON, plot, trained checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.config import RunConfig
from fewnorm.episodes import loop
from fewnorm.episodes.probing import embedding_state
from tests.episodes.test_sampler import make_store

TINY = ["--hidden", "8", "--queries", "3", "--seeds", "2"]


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    synthetic = lambda dataset, split, root=None, **options: make_store(size=28)  # noqa: E731
    monkeypatch.setattr("fewnorm.data.load_split", synthetic)  # probe and train() read it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_probe_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "p"
    code, stdout, stderr = invoke("probe", "--norms", "bn,ln,gn", "--norm-opt", "gn:groups=2", *TINY,
                                  "--out", str(out))  # fmt: skip
    assert code == 0, stderr
    for text in ("probe: conv4 on omniglot-minimal", "cosine sim.", "stable rank", "grad norm", "layernorm"):
        assert text in stdout
    data = json.loads((out / "probe.json").read_text())
    assert list(data["series"]) == ["batchnorm", "layernorm", "groupnorm"]
    assert [s["layer"] for s in data["series"]["batchnorm"]] == [0, 1, 2, 3]
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_of_a_trained_checkpoint(tmp_path: Path) -> None:
    config = RunConfig(norm="groupnorm", norm_options={"groups": 2}, hidden=8, episodes=2, val_every=2,
                       val_episodes=2, test_episodes=2, train_ways=5, train_queries=2, queries=3)  # fmt: skip
    loop.train(config, tmp_path / "run")
    code, stdout, stderr = invoke("probe", "--checkpoint", str(tmp_path / "run"), "--seeds", "1",
                                  "--out", str(tmp_path / "p"), "--json", "--no-plots")  # fmt: skip
    assert code == 0, stderr
    series = json.loads(stdout)["series"]
    assert list(series) == ["groupnorm", "groupnorm (trained)"]  # the run's settings at init, then trained
    assert series["groupnorm"] != series["groupnorm (trained)"]
    assert not (tmp_path / "p" / "probe.png").exists()


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_probe_of_a_meta_learned_init(algo: str, tmp_path: Path) -> None:
    config = RunConfig(algo=algo, norm="batchnorm", hidden=8, episodes=2, val_every=2, val_episodes=2,
                       test_episodes=2, queries=3, inner_steps_test=1)  # fmt: skip
    loop.train(config, tmp_path / "run")
    code, stdout, stderr = invoke("probe", "--checkpoint", str(tmp_path / "run"), "--seeds", "1",
                                  "--out", str(tmp_path / "p"), "--json", "--no-plots")  # fmt: skip
    assert code == 0, stderr
    series = json.loads(stdout)["series"]
    assert list(series) == ["batchnorm", "batchnorm (trained)"]
    assert series["batchnorm"] != series["batchnorm (trained)"]  # the body moved in meta-training
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    body = embedding_state(state)
    assert body and all(k in state for k in ("embedding." + k for k in body))
    assert not any(k.startswith("head.") for k in body)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--norms", "bachnorm"], "Did you mean 'batchnorm'?"),
        (["--seeds", "0"], "--seeds must be positive"),
        (["--checkpoint", "/nonexistent/run"], "no checkpoint at"),
        (["--backbone", "vgg"], "unknown backbone 'vgg'"),
        (["--ways", "0"], "options: key 'ways': Input should be greater than 0"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("probe", *TINY, *args, "--out", str(tmp_path / "p"))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
