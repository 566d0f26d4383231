"""``fewnorm norms`` fits a terminal; ``fewnorm norms show`` prints clean text and allowed values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Literal

from typer.testing import CliRunner

from fewnorm.cli.main import app
from fewnorm.cli.norms import plain

runner = CliRunner()


def _run(*args: str, columns: int = 120) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "FEWNORM_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "fewnorm.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_listing_fits_120_columns() -> None:
    from fewnorm.norms import list_norms

    out = _run("norms")
    count = len(list_norms())
    lines = out.splitlines()
    assert len(lines) <= 5 + 2 * count  # title, rules and header, at most two lines a normalizer
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if "name" in line and "kind" in line)
    for column in ("statistics", "summary"):
        assert column in header
    assert "paper" not in header  # papers are in `norms show NAME`


def test_show_prints_clean_text_and_choices() -> None:
    out = _run("norms", "show", "batchnorm")
    for raw in ("``", ":class:", ":func:", "benchmarks/", ".py"):
        assert raw not in out
    assert "paper: Ioffe and Szegedy" in out
    assert "transductive | running | support" in out
    assert "true | false" in out
    swbn = _run("norms", "show", "swbn")
    assert "kl | fro" in swbn


def test_show_json_lists_choices() -> None:
    result = runner.invoke(app, ["norms", "show", "bn", "--json"])
    assert result.exit_code == 0
    options = json.loads(result.stdout)["options"]
    assert options["mode"]["choices"] == ["transductive", "running", "support"]
    assert options["momentum"]["choices"] is None


def test_plain_strips_sphinx_markup_and_repository_paths() -> None:
    assert plain("Factory for :class:`~fewnorm.norms.batch.FewShotBatchNorm2d`.") == (
        "Factory for FewShotBatchNorm2d."
    )
    assert plain("Uses ``mode`` and :func:`torch.var`.") == "Uses mode and torch.var."
    assert plain(":ref:`the guide <guide>` here") == "the guide here"
    assert plain("NCHW: not declared faster (benchmarks/memory_format.py measures it)") == (
        "NCHW: not declared faster"
    )


def _literal_factory(num_channels: int, /, center: Literal["mean", "none"] = "mean") -> object:
    return None


def test_literal_options_list_their_values() -> None:
    from fewnorm.cli.norms import option_choices
    from fewnorm.norms import NormSpec

    spec = NormSpec(name="lit", factory=_literal_factory, summary="", paper="", statistics=("none",))
    assert option_choices(spec, spec.options()["center"]) == ["mean", "none"]
