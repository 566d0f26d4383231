"""Progress shows what is known: no ``nan`` on evaluation bars, plain lines off a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fewnorm.cli.render import PlainProgress, TrainProgress, train_progress
from fewnorm.episodes.loop import EpisodeLog


def test_evaluation_bars_show_no_nan_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    with train_progress(True, console=console) as bars:
        assert isinstance(bars, TrainProgress)
        bars.on_episode(EpisodeLog(1, 10, 1.25, 0.5))
        advance = bars.on_stage("validate", 10)
        advance(4)
        bars.progress.refresh()
        advance(10)
    out = buffer.getvalue()
    assert "nan" not in out
    assert "loss 1.250  acc 0.500" in out
    assert "validate" in out


def test_plain_lines_when_stderr_is_not_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=120)
    with train_progress(True, console=console) as bars:
        assert isinstance(bars, PlainProgress)
        for episode in range(1, 41):
            bars.on_episode(EpisodeLog(episode, 40, 1.0 / episode, 0.5))
            if episode == 20:
                advance = bars.on_stage("validate", 5)
                for done in range(1, 6):
                    advance(done)
        advance = bars.on_stage("test", 3)
        advance(3)
    lines = buffer.getvalue().splitlines()
    train = [line for line in lines if line.startswith("train ")]
    assert train[0].startswith("train 1/40  loss 1.000  acc 0.500")
    assert train[-1].startswith("train 40/40")
    assert len(train) == 21  # the first, every 2nd (1/20 of 40), the last
    assert any(line.startswith("validate 5/5 episodes in ") for line in lines)
    assert lines[-1].startswith("test 3/3 episodes in ")
    assert "nan" not in buffer.getvalue()
    assert "\x1b" not in buffer.getvalue()  # no control codes in a log


def test_disabled_progress_prints_nothing() -> None:
    buffer = io.StringIO()
    with train_progress(False, console=Console(file=buffer, force_terminal=False)) as bars:
        bars.on_episode(EpisodeLog(1, 2, 0.1, 1.0))
        bars.on_stage("test", 1)(1)
    assert buffer.getvalue() == ""


def test_sweep_progress_prints_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from fewnorm.cli import render
    from fewnorm.cli.sweep_view import sweep_progress

    buffer = io.StringIO()
    monkeypatch.setattr(render, "stderr", Console(file=buffer, force_terminal=False, width=120))
    with sweep_progress([], enabled=True) as show:
        show(("start", "batchnorm-seed0", 300))
        show(("episode", "batchnorm-seed0", 10))
        show(("stage", "batchnorm-seed0", "validate", 5, 50))
        show(("done", "batchnorm-seed0", "ok", ""))
        show(("done", "swbn-seed0", "diverged", "nan at 3"))
    assert buffer.getvalue().splitlines() == [
        "batchnorm-seed0: training 300 episodes",
        "batchnorm-seed0: ok (1/0 runs)",
        "swbn-seed0: diverged nan at 3 (2/0 runs)",
    ]
