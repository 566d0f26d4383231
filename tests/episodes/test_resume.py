"""Resumable runs: Ctrl-C and kills resume to bit-identical results; atomic checkpoints."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fewnorm import runs
from fewnorm.config import RunConfig
from fewnorm.episodes import loop
from fewnorm.errors import FewnormError
from fewnorm.runs import RunDir, run_status
from tests.episodes.test_sampler import make_store

CONFIG = RunConfig(
    norm="batchnorm", hidden=8, episodes=7, val_every=2, val_episodes=3, test_episodes=4,
    train_ways=5, train_queries=2, queries=3, lr_halve_every=3,
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for every run here: results are bit-identical only at equal thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))


def _numbers(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    for varying in ("wall_seconds", "train_seconds_per_episode", "run_dir"):
        summary.pop(varying)
    return summary


def _stop_at(episode: int, exc: type[BaseException]) -> Any:
    def on_episode(log: loop.EpisodeLog) -> None:
        if log.episode == episode:
            raise exc

    return on_episode


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
        run = tmp_path_factory.mktemp("ref") / "run"
        loop.train(CONFIG, run)
    return run


def test_same_seed_gives_bit_identical_metrics(reference: Path, tmp_path: Path) -> None:
    loop.train(CONFIG, tmp_path / "again")
    assert (tmp_path / "again" / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert _numbers(tmp_path / "again") == _numbers(reference)
    assert not (reference / "last.pt").exists()  # dropped once the run has finished


@pytest.mark.parametrize("episode", [3, 4, 7])
def test_ctrl_c_then_resume_is_identical(reference: Path, tmp_path: Path, episode: int) -> None:
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted) as info:
        loop.train(CONFIG, run, on_episode=_stop_at(episode, KeyboardInterrupt))
    assert info.value.episode == episode
    partial = json.loads((run / "summary.json").read_text())
    assert partial["partial"] is True and partial["episode"] == episode
    assert "fewnorm train --resume" in partial["resume"]
    assert run_status(run) == "interrupted"
    assert torch.load(run / "last.pt", weights_only=True)["episode"] == episode

    summary = loop.train(CONFIG, run, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert _numbers(run) == _numbers(reference)
    assert summary.test_accuracies == _numbers(reference)["test_accuracies"]
    assert run_status(run) == "finished"


def test_killed_run_resumes_from_the_last_validation(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):  # a kill: no final checkpoint, only the one at episode 4
        loop.train(CONFIG, run, on_episode=_stop_at(5, RuntimeError))
    assert run_status(run) == "resumable"
    assert torch.load(run / "last.pt", weights_only=True)["episode"] == 4
    with open(run / "metrics.jsonl", "a") as fh:  # lines written after the checkpoint
        fh.write('{"kind": "train", "episode": 5}\n')
    loop.train(CONFIG, run, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert _numbers(run) == _numbers(reference)


def test_interrupt_during_validation_resumes_identically(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"

    validations = {"n": 0}

    def on_stage(name: str, total: int) -> Any:
        validations["n"] += name == "validate"

        def advance(done: int) -> None:
            if validations["n"] == 3 and done == 2:  # mid-way through validating episode 6
                raise KeyboardInterrupt

        return advance

    with pytest.raises(loop.RunInterrupted):
        loop.train(CONFIG, run, on_stage=on_stage)
    loop.train(CONFIG, run, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    assert _numbers(run) == _numbers(reference)


def test_fresh_run_refuses_an_unfinished_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted):
        loop.train(CONFIG, run, on_episode=_stop_at(3, KeyboardInterrupt))
    with pytest.raises(FewnormError, match="--resume"):
        loop.train(CONFIG, run)
    with pytest.raises(FewnormError, match="other settings"):
        loop.train(CONFIG.model_copy(update={"lr": 0.01}), run, resume=True)
    with pytest.raises(FewnormError, match="no resumable checkpoint"):
        loop.train(CONFIG, tmp_path / "empty", resume=True)


def _edit_checkpoint(run: Path, edit: Any) -> None:
    checkpoint = torch.load(run / runs.LAST, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, run / runs.LAST)


def test_checkpoint_of_an_older_version_resumes(reference: Path, tmp_path: Path) -> None:
    """A key added to RunConfig after the checkpoint was written takes its default on resume."""
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted):
        loop.train(CONFIG, run, on_episode=_stop_at(3, KeyboardInterrupt))
    _edit_checkpoint(run, lambda c: c["config"].pop("split_file"))
    loop.train(CONFIG, run, resume=True)
    assert _numbers(run) == _numbers(reference)


def test_checkpoint_with_settings_now_rejected_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted):
        loop.train(CONFIG, run, on_episode=_stop_at(3, KeyboardInterrupt))
    _edit_checkpoint(run, lambda c: c["config"].update(ways=0))
    with pytest.raises(FewnormError, match=r"checkpoint in '.*run': key 'ways': Input should be greater"):
        loop.train(CONFIG, run, resume=True)


def test_the_cuda_generator_of_the_run_device_is_saved_and_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DropBlock draws from the device generator: a CUDA run keeps its device's state only."""
    calls: list[tuple[str, object]] = []
    state = torch.arange(8, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: calls.append(("set", device)))
    gpu = torch.device("cuda:1")
    assert loop.device_rng_state(gpu) is state
    loop.set_device_rng_state(gpu, state)
    assert calls == [("get", gpu), ("set", gpu)]
    cpu = torch.device("cpu")
    assert loop.device_rng_state(cpu) is None
    loop.set_device_rng_state(cpu, state)  # a CUDA checkpoint resumed on the CPU
    loop.set_device_rng_state(gpu, None)  # a CPU checkpoint resumed on a GPU
    assert len(calls) == 2


def test_checkpoint_holds_the_device_generator_slot(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(loop.RunInterrupted):
        loop.train(CONFIG, run, on_episode=_stop_at(3, KeyboardInterrupt))
    checkpoint = torch.load(run / runs.LAST, weights_only=True)
    assert "cuda_rng" in checkpoint and checkpoint["cuda_rng"] is None  # a CPU run


def test_resume_of_finished_run_is_refused(reference: Path) -> None:
    with pytest.raises(FewnormError, match="already finished"):
        loop.train(CONFIG, reference, resume=True)


def test_interrupted_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    good = {"config": {}, "model": {"w": torch.ones(3)}, "episode": 2}
    run.save_last(good)

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temp file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run.save_last({"config": {}, "model": {"w": torch.zeros(3)}, "episode": 4})
    monkeypatch.undo()
    kept = torch.load(run.path / runs.LAST, weights_only=True)
    assert kept["episode"] == 2 and torch.equal(kept["model"]["w"], torch.ones(3))
    assert [p.name for p in run.path.iterdir()] == [runs.LAST]  # no temporary file left behind


def test_truncated_checkpoint_is_reported_not_loaded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / runs.LAST).write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(FewnormError, match="not a readable fewnorm checkpoint"):
        run.load_last()


def test_divergence_marks_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewnorm.episodes.algorithms import ProtoNet
    from fewnorm.episodes.protonet import StepResult

    real_step = ProtoNet.train_step
    calls = {"n": 0}

    def flaky(self: ProtoNet, *args: Any) -> StepResult:
        calls["n"] += 1
        result = real_step(self, *args)
        return StepResult(float("inf"), 0.0) if calls["n"] == 5 else result

    monkeypatch.setattr(ProtoNet, "train_step", flaky)
    with pytest.raises(FewnormError, match="episode 5 with normalizer 'batchnorm'"):
        loop.train(CONFIG, tmp_path / "run")
    assert run_status(tmp_path / "run") == "diverged"
    marker = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert marker["episode"] == 5
    with pytest.raises(FewnormError, match="diverged"):
        loop.train(CONFIG, tmp_path / "run", resume=True)


def test_ctrl_c_inside_an_episode_is_held_until_it_ends() -> None:
    import signal

    reached = []

    def episode() -> None:
        with loop._deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("end of block")  # the signal did not cut the block short

    with pytest.raises(KeyboardInterrupt):
        episode()
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cli_ctrl_c_exits_130_and_resume_finishes(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from fewnorm.cli.main import app
    from fewnorm.cli.render import TrainProgress

    real = TrainProgress.on_episode

    def interrupt(self: TrainProgress, log: loop.EpisodeLog) -> None:
        real(self, log)
        if log.episode == 3:
            raise KeyboardInterrupt

    options = ["--norm", "batchnorm", "--hidden", "8", "--episodes", "7", "--val-every", "2"]
    options += ["--val-episodes", "3", "--test-episodes", "4", "--train-ways", "5", "--train-queries", "2"]
    options += ["--queries", "3", "--no-progress"]
    options += ["--threads", str(torch.get_num_threads())]  # the reference's: bits depend on it
    run = tmp_path / "run"
    monkeypatch.setattr(TrainProgress, "on_episode", interrupt)
    args = ["train", *options, "--out", str(run), "--json"]
    result = CliRunner().invoke(app, [*args[:-1], "--config", str(_config_file(tmp_path))])
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        f"interrupted at episode 3/7; checkpoint saved; resume with: fewnorm train --resume {run}"
    ]
    monkeypatch.setattr(TrainProgress, "on_episode", real)
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--episodes", "9"])
    assert result.exit_code == 2 and "drop --episodes" in result.stderr
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--json", "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["test"] == _numbers(reference)["test"]
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


def _config_file(tmp_path: Path) -> Path:
    """The keys of CONFIG that the train command has no option for."""
    path = tmp_path / "extra.yaml"
    path.write_text("lr_halve_every: 3\n")
    return path


def test_killed_before_the_first_checkpoint_says_rerunning_starts_afresh(
    reference: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):  # a kill before the first validation: no last.pt
        loop.train(CONFIG, run, on_episode=_stop_at(1, RuntimeError))
    assert not (run / runs.LAST).exists()
    with pytest.raises(FewnormError) as refused:
        loop.train(CONFIG, run, resume=True)
    message = str(refused.value)
    assert "stopped before its first checkpoint" in message
    assert "rerunning the same command starts it afresh: `fewnorm train " in message  # plugins loaded
    assert message.endswith(f"--config {run}/config.yaml --out {run}`")  # in this process: in between
    loop.train(CONFIG, run)  # the same command again: accepted, and the same numbers
    assert _numbers(run) == _numbers(reference)


@pytest.mark.parametrize("failing_write", [1, 2])
def test_disk_full_at_a_checkpoint_says_what_survived_and_how_to_go_on(
    reference: Path, tmp_path: Path, failing_write: int
) -> None:
    import errno

    from fewnorm.errors import RunWriteError

    run = tmp_path / "run"
    real_replace = os.replace
    writes = {"last": 0}

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith(runs.LAST):
            writes["last"] += 1
            if writes["last"] == failing_write:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(os, "replace", replace)
        with pytest.raises(RunWriteError) as failed:
            loop.train(CONFIG, run)
    message = str(failed.value)
    assert message.startswith(f"cannot write '{run / runs.LAST}': No space left on device; ")
    if failing_write == 1:
        assert "no checkpoint had been written yet" in message
        assert "rerun the same command: `fewnorm train " in message
        assert message.endswith(f"--config {run}/config.yaml --out {run}`")
        loop.train(CONFIG, run)
    else:
        assert f"the previous checkpoint '{run / runs.LAST}' is intact" in message
        assert message.endswith(f"resume with `fewnorm train --resume {run}`")
        assert torch.load(run / runs.LAST, weights_only=True)["episode"] == 2
        loop.train(CONFIG, run, resume=True)
    assert _numbers(run) == _numbers(reference)
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_a_loss_that_grows_by_orders_of_magnitude_is_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewnorm.episodes.algorithms import ProtoNet
    from fewnorm.episodes.protonet import StepResult

    calls = {"n": 0}

    def exploding(self: ProtoNet, *args: Any) -> StepResult:  # finite, as --lr 1e6 gives
        calls["n"] += 1
        return StepResult(1.6 * 100.0 ** (calls["n"] - 1), 0.2)

    monkeypatch.setattr(ProtoNet, "train_step", exploding)
    config = CONFIG.model_copy(update={"lr_halve_every": 0})  # no optimizer steps: no scheduler
    with pytest.raises(
        FewnormError,
        match=r"episode 3 with normalizer 'batchnorm' "
        r"\(loss 5.39e\+03 over the last 3 steps, 3.4e\+03x the first step's 1.6\)",
    ):
        loop.train(config, tmp_path / "run")
    assert run_status(tmp_path / "run") == "diverged"


@pytest.mark.parametrize(
    ("losses", "diverged"),
    [
        ([2.0, 1.5, 900.0], False),  # below the floor
        ([1e-4, 0.5, 5.0, 9.0], False),  # orders of magnitude above a tiny first loss, yet small
        ([2.0] + [1.9] * 20 + [3e4], True),  # one step of 3e4 lifts the window's mean to 3e3
        ([2.0, float("nan")], True),
    ],
)
def test_divergence_rule(losses: list[float], diverged: bool) -> None:
    state = loop.TrainState()
    verdicts = [loop._divergence(state, loss) for loss in losses]
    assert all(v is None for v in verdicts[:-1])
    assert (verdicts[-1] is not None) is diverged
    assert len(state.recent_losses) <= loop.GROWTH_WINDOW


def test_real_divergence_at_a_huge_learning_rate(tmp_path: Path) -> None:
    with pytest.raises(FewnormError, match=r"x the first step's"):
        loop.train(CONFIG.model_copy(update={"lr": 1e6}), tmp_path / "run")
    assert run_status(tmp_path / "run") == "diverged"
