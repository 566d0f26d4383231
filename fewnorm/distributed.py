"""One run on many processes (torchrun): each step's tasks split in equal shares, gradients averaged.

A run with ``world_size`` set (the CLI sets it under torchrun or ``--nproc``)
joins a :class:`Group`. Rank ``r`` of ``w`` takes tasks ``r*m/w .. (r+1)*m/w - 1``
of each step's ``m = meta_batch`` and draws task ``j`` of step ``s`` from a
generator seeded by ``(seed, s, j)`` alone, so any process count draws the
same ``m`` tasks. Each rank's step function averages over its own share; an
optimizer step pre-hook then averages the gradients over the ranks, which with
equal shares is the mean over all ``m`` tasks. Normalization statistics stay
per task: each task's forward passes see only that task's images (no
SyncBatchNorm). Buffers (running statistics) follow rank 0's, as
DistributedDataParallel does. Fixed validation and test episodes are split
across the ranks and gathered back in episode order. Rank 0 alone writes the
run directory. One process (``world_size`` 1) talks to no one: its collectives
are identities and no process group is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fewnorm.errors import ConfigError, FewnormError
from fewnorm.runs import RunDir

if TYPE_CHECKING:
    from fewnorm.config import RunConfig
    from fewnorm.episode import Episode, EpisodeSource, StepResult


def task_seed(seed: int, step: int, task: int) -> int:
    """Seed of task ``task`` (its index among all ranks) of training step ``step`` (from 1)."""
    digest = hashlib.blake2b(f"fewnorm-task:{seed}:{step}:{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _rank_seed(seed: int, step: int, rank: int) -> int:
    """Seed of a rank's torch RNG for one step (DropBlock masks): differs across ranks and steps."""
    digest = hashlib.blake2b(f"fewnorm-rank:{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def resume_command(world_size: int | None, run_dir: Path) -> str:
    """The command that continues ``run_dir`` on the number of processes it was trained on."""
    if world_size is None:
        return f"fewnorm train --resume {run_dir}"
    return f"fewnorm train --nproc {world_size} --resume {run_dir}"


def check_resume_world_size(saved: int | None, now: int | None, run_dir: Path) -> None:
    """Refuse, in one line, to continue a run on another number of processes than it started on."""
    if saved == now:
        return

    def processes(n: int | None) -> str:
        return "one process without torchrun" if n is None else f"{n} process{'es' * (n != 1)} (torchrun)"

    raise ConfigError(
        f"'{run_dir}' was trained on {processes(saved)} and cannot continue on {processes(now)}: "
        f"which tasks each step draws depends on it; resume with `{resume_command(saved, run_dir)}`"
    )


def _share_outcome(error: FewnormError | None) -> FewnormError | None:
    """Rank 0's ``error`` (or None) on every rank, so that a refusal there stops all ranks alike."""
    import torch.distributed as dist

    box = [error]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LeaderRunDir(RunDir):
    """Rank 0's run directory: it alone writes; whether :meth:`prepare` refused is told to all."""

    def prepare(self) -> None:
        try:
            super().prepare()
        except FewnormError as exc:
            _share_outcome(exc)
            raise
        _share_outcome(None)


class FollowerRunDir(RunDir):
    """The run directory as ranks other than 0 see it: they read checkpoints and write nothing."""

    def prepare(self) -> None:
        """Raise rank 0's refusal (a finished or unfinished run in the way), if it refused."""
        error = _share_outcome(None)
        if error is not None:
            raise error

    def check_unowned(self) -> None:
        pass  # rank 0 checks, and owns the directory

    def check_fresh(self) -> None:
        pass

    @contextmanager
    def lock(self, what: str = "run directory") -> Iterator[None]:
        yield  # rank 0 (or the --nproc launcher) holds the lock for every rank

    def write_config(self, config: dict[str, Any]) -> None:
        pass

    def write_versions(self, extra: dict[str, Any] | None = None) -> None:
        pass

    def log(self, record: dict[str, Any]) -> None:
        pass

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        pass

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def save_last(self, state: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass

    def write_summary(self, summary: dict[str, Any]) -> None:
        pass

    def mark_diverged(self, message: str, episode: int) -> None:
        pass


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks that share one run."""

    rank: int
    world_size: int
    device: torch.device

    def run_dir(self, path: Path) -> RunDir:
        if self.world_size == 1:
            return RunDir(path)
        return LeaderRunDir(path) if self.rank == 0 else FollowerRunDir(path)

    def step_tasks(self, sampler: EpisodeSource, config: RunConfig, step: int) -> list[Episode]:
        """This rank's share of step ``step``'s tasks; task ``j`` drawn (and augmented) from its seed.

        Also reseeds torch's RNG from ``(seed, step, rank)``, so DropBlock masks
        differ across ranks and a resumed run needs no RNG state but the step.
        """
        share = config.meta_batch // self.world_size
        tasks = []
        for j in range(self.rank * share, (self.rank + 1) * share):
            generator = torch.Generator().manual_seed(task_seed(config.seed, step, j))
            episode = sampler.sample(generator)
            if config.augment:
                from fewnorm.data.augment import augment_episode

                episode = augment_episode(episode, generator)
            if config.affine:
                from fewnorm.data.affine import affine_episode

                episode = affine_episode(episode, generator)
            tasks.append(episode.to(self.device))
        torch.manual_seed(_rank_seed(config.seed, step, self.rank))
        return tasks

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Start every rank from rank 0's weights; average gradients over ranks before each step."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, 0)

        def before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            params = [p for g in opt.param_groups for p in g["params"]]
            self._average_gradients(params)
            self._follow_buffers(model)

        optimizer.register_step_pre_hook(before_step)

    def _average_gradients(self, params: list[torch.Tensor]) -> None:
        """Mean of each gradient over the ranks; a missing gradient counts as zeros (None if none has it).

        One all-reduce of every gradient and a presence count per parameter, flattened.
        """
        import torch.distributed as dist

        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # (total parameters,)
        present = torch.tensor([p.grad is not None for p in params], dtype=flat.dtype, device=flat.device)
        both = torch.cat([flat, present])
        dist.all_reduce(both)
        offset = 0
        for p, count in zip(params, both[flat.numel() :].tolist(), strict=True):
            mean = both[offset : offset + p.numel()].view_as(p).div(self.world_size).to(p.dtype)
            offset += p.numel()
            if count == 0:
                continue
            if p.grad is None:
                p.grad = mean
            else:
                p.grad.copy_(mean)

    def _follow_buffers(self, model: nn.Module) -> None:
        """Floating buffers (running statistics) from rank 0; integer ones count passes, equal everywhere."""
        import torch.distributed as dist

        buffers = [b for b in model.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        dist.broadcast(flat, 0)
        offset = 0
        with torch.no_grad():
            for b in buffers:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    def mean_result(self, result: StepResult) -> StepResult:
        """The step's loss and accuracy averaged over the ranks (non-finite on all if on one)."""
        if self.world_size == 1:
            return result
        import torch.distributed as dist

        values = torch.tensor([result.loss, result.accuracy], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        loss, accuracy = (values / self.world_size).tolist()
        return dataclasses.replace(result, loss=loss, accuracy=accuracy)

    def evaluate(
        self, score: Callable[[int], float], episodes: int, on_episode: Callable[[int], None] | None
    ) -> list[float]:
        """``score(i)``, ``i < episodes``, in order on every rank; rank ``r`` scores ``i = r, r + w, ...``."""
        mine = []
        for n, i in enumerate(range(self.rank, episodes, self.world_size)):
            mine.append(score(i))
            if on_episode is not None:
                on_episode(min(episodes, (n + 1) * self.world_size))
        if self.world_size == 1:
            return mine
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, mine)
        return [parts[i % self.world_size][i // self.world_size] for i in range(episodes)]
