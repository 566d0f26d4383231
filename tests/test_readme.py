"""The README: short, its synopsis complete, no host-specific claims, quick start in order."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _synopsis() -> str:
    return README.split("## Commands", 1)[1].split("```", 2)[1]


def test_readme_reads_in_five_minutes() -> None:
    assert len(README.split()) < 1500  # about 250 words a minute
    assert len(README.splitlines()) < 250


def test_synopsis_names_every_train_option() -> None:
    import typer

    from fewnorm.cli.main import app

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    synopsis = _synopsis()
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--") and opt not in ("--help", "--episodes-per-step", "--progress"):
                assert re.search(rf"{re.escape(opt)}\b", synopsis), opt


def test_synopsis_names_compare_dataset_and_episodes() -> None:
    compare = next(line for line in _synopsis().splitlines() if "fewnorm compare" in line)
    for opt in ("--dataset", "--episodes"):
        assert opt in compare


def test_no_host_specific_claims() -> None:
    for claim in ("89.09", "3.5 to 5.5", "bit-identical only at equal", "1175 against 121"):
        assert claim not in README
    notes = (ROOT / "docs" / "lab-notes.md").read_text()
    assert "89.09" in notes and "3.5 to 5.5 min" in notes and "AMD EPYC" in notes


def test_quick_start_links_the_data_then_runs_the_headline() -> None:
    quick = README.split("## Quick start", 1)[1].split("## ", 1)[0]
    order = [
        quick.index(step)
        for step in ("make demo", ". .venv/bin/activate", "fewnorm train", "fewnorm evaluate")
    ]
    assert order == sorted(order)
    assert "fewnorm data link" in quick
    assert "images_background_small1.zip" in quick  # where hand-downloaded zips go
    demo = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1]
    assert "data link" in demo
    assert ">/dev/null" not in demo.split("\n\n", 1)[0]  # verify's table is shown
