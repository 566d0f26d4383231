"""``--help`` a researcher can trust: defaults shown, option names whole at 80 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fewnorm.cli.main import help_markup_mode


def _help(*command: str, columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "fewnorm.cli", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def train_help_80() -> str:
    return _help("train", columns=80)


def test_train_help_at_80_columns_keeps_option_names_whole(train_help_80: str) -> None:
    assert "…" not in train_help_80
    assert max(len(line) for line in train_help_80.splitlines()) <= 80
    for name in ("--meta-batch, --episodes-per-step", "--vectorize-chunks", "--channels-last", "--amp"):
        assert name in train_help_80


def _defaults(text: str) -> dict[str, str]:
    """``--option`` -> the first ``default X`` of its help (the plain help's definition list)."""
    blocks: list[str] = []
    for line in text.splitlines():
        if line.startswith("  --"):
            blocks.append(line)
        elif blocks and line.startswith("     "):
            blocks[-1] += ("" if blocks[-1].endswith("-") else " ") + line.strip()  # click breaks at "-"
    found: dict[str, str] = {}
    for block in blocks:
        match = re.search(r"\(default:? ([^;,)\s]+)", block)
        if match:
            found[block.split()[0].rstrip(",")] = match.group(1).rstrip(".")
    return found


def test_train_help_shows_the_defaults(train_help_80: str) -> None:
    from fewnorm.config import RunConfig

    defaults = _defaults(train_help_80)
    config = RunConfig()
    for option in ("ways", "shots", "norm", "dataset", "algo", "seed", "queries", "hidden", "backbone"):
        assert defaults[f"--{option}"] == str(getattr(config, option)), option
    assert float(defaults["--lr"]) == config.lr
    assert int(defaults["--val-every"]) == config.val_every
    assert int(defaults["--test-episodes"]) == config.test_episodes
    maml = RunConfig(algo="maml")
    assert f"MAML-family {maml.val_every}" in " ".join(train_help_80.split())


def test_head_help_lists_every_head(train_help_80: str) -> None:
    from fewnorm.episodes.heads import HEADS

    flat = " ".join(train_help_80.split())
    assert " | ".join(HEADS) in flat


def test_rich_panels_only_where_they_fit() -> None:
    assert help_markup_mode(80) is None
    assert help_markup_mode(119) is None
    assert help_markup_mode(120) == "rich"
    wide = _help("train", columns=140)
    assert "╭" in wide  # rich panels
    assert "…" not in wide
