"""One run on two gloo processes equals one process: meta-gradients, training, resume, divergence.

The two-rank side runs in two spawned processes (gloo on a free localhost
port, one torch thread each: once for the meta-gradients, once for the slow
training runs) and leaves its results in files; the one-rank side runs here.
The process-count-free task seeding makes both draw the same tasks, so only
float rounding may differ.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from fewnorm import distributed, runs, torchrun
from fewnorm.config import RunConfig, validate_config
from fewnorm.distributed import FollowerRunDir, Group
from fewnorm.episodes import loop
from fewnorm.episodes.algorithms import MAML, get_algorithm
from fewnorm.episodes.protonet import StepResult
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError, TrainingDivergedError
from tests.episodes.test_sampler import make_store

CPU = torch.device("cpu")
TINY = {"hidden": 8, "ways": 5, "shots": 1, "train_ways": 5, "train_queries": 2, "queries": 3}
#: One meta-gradient each: 8 tasks, MAML and ANIL second order with BatchNorm; ProtoNet in running
#: mode, so that its running statistics move and the ranks must agree on them, and with one
#: episode per rank (its single-episode step against the two-episode step of one process).
GRADIENT = {
    "maml": RunConfig(algo="maml", meta_batch=8, **TINY),
    "anil": RunConfig(algo="anil", meta_batch=8, **TINY),
    "protonet": RunConfig(algo="protonet", meta_batch=8, norm_options={"mode": "running"}, **TINY),
    "protonet-one-each": RunConfig(algo="protonet", meta_batch=2, **TINY),
    # Reptile's outer "gradient" theta - mean(phi): inner steps on the whole support set (no shuffle).
    "reptile": RunConfig(algo="reptile", meta_batch=8, inner_batch=None, train_shots=2, **TINY),
}
#: A short training run; 5 validation and 7 test episodes do not split evenly over 2 ranks.
TRAIN = RunConfig(
    algo="maml", meta_batch=4, episodes=5, val_every=2, val_episodes=5, test_episodes=7, inner_steps_test=2,
    **TINY,
)  # fmt: skip


def _world(config: RunConfig, world_size: int) -> RunConfig:
    return validate_config(config.model_dump() | {"world_size": world_size}, "test")


def _synthetic(dataset: str, split: str, root: str | None = None) -> Any:
    return make_store(size=28)


def _meta_gradient(config: RunConfig, group: Group) -> dict[str, dict[str, torch.Tensor]]:
    """Gradients after one step on this rank's share of step 1's tasks, the weights and buffers after it.

    In float64: in float32 the step function's own result moves by up to ~1e-4 of the largest
    gradient between 8 tasks at once and 4 + 4 (vectorized convolutions sum in another order),
    in one process as much as in two; float64 leaves only what the ranks change.
    """
    algorithm = get_algorithm(config)
    torch.manual_seed(config.seed)
    model = algorithm.build(config, 1).double()
    optimizer = algorithm.optimizer(model, config)
    group.attach(model, optimizer)
    store = make_store(size=28)
    sampler = EpisodeSampler(store, config.effective_train_ways, config.effective_train_shots, 2)
    tasks = group.step_tasks(sampler, config, 1)
    tasks = [dataclasses.replace(e, support=e.support.double(), query=e.query.double()) for e in tasks]
    algorithm.train_step(model, optimizer, tasks)
    return {
        "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
        "state": {k: t.clone() for k, t in model.state_dict().items()},
    }


def _stop_at(episode: int) -> Any:
    def on_episode(log: loop.EpisodeLog) -> None:
        if log.episode == episode:
            raise RuntimeError("killed")  # a kill: no final checkpoint, the one of episode 2 stays

    return on_episode


def _gradient_rank(rank: int, port: int, out: str) -> None:
    """One of two ranks: the meta-gradient of its share of each algorithm's 8 tasks."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    grads = {}
    for algo, config in GRADIENT.items():
        group = torchrun.join(_world(config, 2))
        assert group is not None and group.rank == rank
        grads[algo] = _meta_gradient(_world(config, 2), group)
    torch.save(grads, Path(out) / f"gradients{rank}.pt")
    dist.destroy_process_group()


def _training_rank(rank: int, port: int, out: str) -> None:
    """One of two ranks: a full run, a killed and resumed one, and one where rank 1's loss is NaN."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    base = Path(out)
    loop.load_split = _synthetic  # type: ignore[assignment]  # this process is thrown away
    config = _world(TRAIN, 2)
    loop.train(config, base / ("full" if rank == 0 else "full-rank1"))  # rank 1 must write nothing
    with pytest.raises(RuntimeError):
        loop.train(config, base / "resumed", on_episode=_stop_at(3))
    loop.train(config, base / "resumed", resume=True)

    real_step = MAML.train_step

    def nan_on_rank1(self: MAML, model: Any, optimizer: Any, episodes: Any) -> StepResult:
        result = real_step(self, model, optimizer, episodes)
        nan = rank == 1 and self.calls == 3  # type: ignore[attr-defined]
        self.calls += 1  # type: ignore[attr-defined]
        return StepResult(float("nan"), 0.0) if nan else result

    MAML.calls = 0  # type: ignore[attr-defined]
    MAML.train_step = nan_on_rank1  # type: ignore[method-assign]
    try:
        loop.train(config, base / "diverged")
    except TrainingDivergedError as exc:
        (base / f"diverged{rank}.txt").write_text(str(exc))
    dist.destroy_process_group()


def _refused_rank(rank: int, port: int, out: str) -> None:
    """Both ranks train into a finished run and into one another process owns: both are refused."""
    import torch.distributed as dist

    from fewnorm.errors import FewnormError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    loop.load_split = _synthetic  # type: ignore[assignment]  # this process is thrown away
    for name in ("finished", "owned"):
        try:
            loop.train(_world(TRAIN, 2), Path(out) / name)
        except FewnormError as exc:
            (Path(out) / f"{name}{rank}.txt").write_text(str(exc))
    dist.destroy_process_group()


def test_rank_zeros_refusal_reaches_every_rank_of_a_caller_made_group(tmp_path: Path) -> None:
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "summary.json").write_text('{"partial": false}')
    with runs.RunDir(tmp_path / "owned").lock():  # this process owns it
        _two_ranks(_refused_rank, tmp_path)  # a rank waiting on rank 0 would fail this in 180 s
    for rank in (0, 1):
        assert "already holds a finished run" in (tmp_path / f"finished{rank}.txt").read_text()
        assert "is in use by another fewnorm process" in (tmp_path / f"owned{rank}.txt").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_ranks(worker: Any, out: Path) -> Path:
    """Run ``worker(rank, port, out)`` on ranks 0 and 1 in spawned processes; a hang fails, never blocks."""
    context = mp.start_processes(
        worker, args=(_free_port(), str(out)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 180
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 180 s (a rank waits on a collective)")
    return out


@pytest.fixture(scope="module")
def gradients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _two_ranks(_gradient_rank, tmp_path_factory.mktemp("gradients"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _two_ranks(_training_rank, tmp_path_factory.mktemp("two-ranks"))


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr("fewnorm.data.load_split", _synthetic)
        run = tmp_path_factory.mktemp("one-rank") / "run"
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            loop.train(_world(TRAIN, 1), run)
        finally:
            torch.set_num_threads(threads)
    return run


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", sorted(GRADIENT))
def test_two_ranks_give_the_meta_gradient_of_one(gradients: Path, algo: str) -> None:
    ranks = [torch.load(gradients / f"gradients{r}.pt", weights_only=True)[algo] for r in range(2)]
    one = _meta_gradient(_world(GRADIENT[algo], 1), Group(0, 1, CPU))
    assert ranks[0]["grads"].keys() == one["grads"].keys() and one["grads"]
    for name, grad in one["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-5, atol=1e-12, msg=name)
        assert torch.equal(ranks[1]["grads"][name], ranks[0]["grads"][name])  # the same average everywhere
    for name, tensor in ranks[0]["state"].items():  # weights and running statistics agree after the step
        assert torch.equal(ranks[1]["state"][name], tensor), name


@pytest.mark.slow
def test_two_rank_training_matches_one_rank(two_ranks: Path, one_rank: Path) -> None:
    two, one = _records(two_ranks / "full"), _records(one_rank)
    assert [(r["kind"], r["episode"]) for r in two] == [(r["kind"], r["episode"]) for r in one]
    for a, b in zip(two, one, strict=True):
        for key in ("loss", "accuracy"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a, b)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (two_ranks / "full", one_rank)]
    assert summaries[0]["test_accuracies"] == pytest.approx(summaries[1]["test_accuracies"], abs=1e-6)
    assert len(summaries[0]["test_accuracies"]) == 7
    assert summaries[0]["config"]["world_size"] == 2 and summaries[1]["config"]["world_size"] == 1


@pytest.mark.slow
def test_only_rank_zero_writes(two_ranks: Path) -> None:
    assert (two_ranks / "full" / "summary.json").is_file()
    assert not (two_ranks / "full-rank1").exists()


def test_followers_override_every_writer() -> None:
    public = {name for name in vars(runs.RunDir) if not name.startswith("_")}
    assert public - {"load_last"} <= set(vars(FollowerRunDir))  # a new writer needs a silent override


@pytest.mark.slow
def test_resume_on_the_same_world_size_is_identical(two_ranks: Path) -> None:
    full, resumed = two_ranks / "full", two_ranks / "resumed"
    assert (resumed / "metrics.jsonl").read_bytes() == (full / "metrics.jsonl").read_bytes()
    numbers = [json.loads((run / "summary.json").read_text()) for run in (full, resumed)]
    assert numbers[0]["test_accuracies"] == numbers[1]["test_accuracies"]


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank(two_ranks: Path) -> None:
    messages = [(two_ranks / f"diverged{r}.txt").read_text() for r in range(2)]
    assert messages[0] == messages[1] and "diverged at episode 4" in messages[0]
    assert runs.run_status(two_ranks / "diverged") == "diverged"


def test_ranks_split_the_tasks_of_one_process() -> None:
    config = RunConfig(meta_batch=4, augment=True, **TINY)
    sampler = EpisodeSampler(make_store(size=28), 5, 1, 2)
    one = Group(0, 1, CPU).step_tasks(sampler, config, 7)
    for world in (2, 4):
        split = [e for r in range(world) for e in Group(r, world, CPU).step_tasks(sampler, config, 7)]
        assert all(
            torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
            for a, b in zip(split, one, strict=True)
        )
    other_step = Group(0, 1, CPU).step_tasks(sampler, config, 8)
    assert not torch.equal(other_step[0].query, one[0].query)
    assert len({distributed.task_seed(0, s, j) for s in range(50) for j in range(8)}) == 400


def test_meta_batch_must_split_evenly() -> None:
    with pytest.raises(ConfigError, match=r"meta_batch 6 .* must be a multiple of world_size 4"):
        validate_config({"meta_batch": 6, "world_size": 4}, "options")


def test_resuming_on_another_number_of_processes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trained on 2 processes \(torchrun\) and cannot continue on 3"):
        distributed.check_resume_world_size(2, 3, tmp_path)
    with pytest.raises(ConfigError, match="without torchrun and cannot continue on 2 processes"):
        distributed.check_resume_world_size(None, 2, tmp_path)
    distributed.check_resume_world_size(2, 2, tmp_path)


def test_a_run_set_for_two_processes_needs_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match=r"set for 2 processes .* but 1 were launched"):
        torchrun.join(_world(TRAIN, 2))
    assert torchrun.join(TRAIN) is None  # world_size unset: the ordinary path
