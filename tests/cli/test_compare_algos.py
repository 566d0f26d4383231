"""``fewnorm compare --algos``: a grid of algorithms x normalizers on identical episodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fewnorm.compare import build_sweep
from tests.cli.test_compare_cli import TINY, invoke
from tests.episodes.test_sampler import make_store

ALGOS = ["protonet", "maml", "reptile", "baseline-pp"]


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import torch

    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_each_algorithm_keeps_its_own_defaults() -> None:
    sweep = build_sweep(None, {}, norms=["batchnorm"], algos=ALGOS)
    runs = {r.label: r.config for r in sweep.runs()}
    assert list(runs) == [f"{a}-batchnorm" for a in ALGOS]
    assert runs["reptile-batchnorm"]["lr"] == 1.0 and runs["reptile-batchnorm"]["inner_optimizer"] == "adam"
    assert runs["protonet-batchnorm"]["lr"] == 1e-3 and runs["maml-batchnorm"]["algo"] == "maml"
    assert runs["baseline-pp-batchnorm"]["inner_steps_test"] == 100
    assert all(c["episodes"] == 300 for c in runs.values())  # compare's short default for all
    plain = build_sweep(None, {}, norms=["batchnorm"])
    assert "settings" not in json.dumps(plain.settings())  # sweeps without --algos keep their keys


def test_compare_runs_the_grid(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    args = ["--algos", ",".join(ALGOS), "--norms", "batchnorm,tasknorm-i", "--set", "inner_steps_test=3"]
    code, _, stderr = invoke("compare", *args, *TINY, "--out", str(out), "--no-plots")
    assert code == 0, stderr
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {f"{a}-{n}" for a in ALGOS for n in ("batchnorm", "tasknorm-i")}
    assert all(r["status"] == "ok" for r in rows.values())
    config = yaml.safe_load((out / "baseline-pp-tasknorm-i-seed0" / "config.yaml").read_text())
    assert config["algo"] == "baseline-pp" and config["pretrain_classes"] == 12
