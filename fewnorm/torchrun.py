"""The processes of one run: torchrun's environment, the process group, and the launcher.

``torchrun --nproc-per-node N -m fewnorm.cli train ...`` starts N processes
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` set;
``fewnorm train --nproc N`` starts the same through torchrun's elastic agent
(:func:`launch`). :func:`join` turns a run's ``world_size`` into this
process's :class:`~fewnorm.distributed.Group`.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import TYPE_CHECKING, NoReturn

import torch

from fewnorm.distributed import Group
from fewnorm.errors import ConfigError

if TYPE_CHECKING:
    from fewnorm.config import RunConfig


def launched_world_size() -> int | None:
    """Processes of this torchrun launch (``WORLD_SIZE``); None when not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["WORLD_SIZE"])


def launched_rank() -> int | None:
    """This process's rank in its torchrun launch (``RANK``); None when not started by torchrun."""
    return int(os.environ["RANK"]) if launched_world_size() is not None else None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _rank_device(name: str, world_size: int) -> torch.device:
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if world_size == 1:
        return device
    if device.index is not None:
        raise ConfigError(f"with {world_size} processes each takes cuda:LOCAL_RANK; pass --device cuda")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if local_world > torch.cuda.device_count():  # checked on every rank, so all refuse together
        raise ConfigError(
            f"{local_world} processes on this machine but {torch.cuda.device_count()} GPUs; "
            "launch at most one process per GPU"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def join(config: RunConfig) -> Group | None:
    """This process's :class:`Group` for ``config``; None for an ordinary run (``world_size`` unset).

    Under torchrun the process group is made here (gloo on CPU, nccl on CUDA,
    one GPU per local rank) unless the caller made it; without a ``threads``
    setting each rank then uses ``cores // processes on this machine`` torch threads.
    """
    if config.world_size is None:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world, rank = launched_world_size() or 1, launched_rank() or 0
    if world != config.world_size:
        raise ConfigError(
            f"the run is set for {config.world_size} processes (world_size) but {world} were launched; "
            f"start it with `torchrun --nproc-per-node {config.world_size} -m fewnorm.cli train ...` "
            f"or `fewnorm train --nproc {config.world_size} ...`"
        )
    device = _rank_device(config.device, world)
    if world > 1:
        if config.threads is None:  # not recorded: share this machine's cores, not torchrun's 1 thread
            torch.set_num_threads(max(1, _cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            _made.append(True)
    return Group(rank, world, device)


_made: list[bool] = []  # whether join() made the process group (then leave() closes it)
_closed: list[bool] = []  # whether leave() closed one: gloo's worker threads outlive it


def leave() -> None:
    """Close the process group :func:`join` made, if it made one (at the end of a torchrun worker)."""
    import torch.distributed as dist

    if _made and dist.is_initialized():
        dist.destroy_process_group()
        _closed.append(True)
    _made.clear()


def closed_a_group() -> bool:
    """Whether this process ran a process group: it must end by :func:`exit_now`."""
    return bool(_closed)


def exit_now(code: object) -> NoReturn:
    """End a worker that ran a process group with ``code``, without interpreter finalization.

    ``destroy_process_group`` leaves gloo's worker threads running (torch 2.14). One
    still releasing the last collective's tensors while Python finalizes takes the GIL
    from a dying interpreter and aborts the process (``std::terminate``, exit -6) after
    the run is complete; about one torchrun run in ten did here (the race
    pytorch/pytorch#179291 describes). Every file fewnorm writes is already written
    atomically by then, so the streams and logging are flushed and the process leaves
    by ``os._exit``. ``code`` is what ``SystemExit`` carried: None, a number or a message.
    """
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)


def launch(nproc: int, cli_args: list[str]) -> int:
    """Run ``python -m fewnorm.cli *cli_args`` on ``nproc`` local processes under torchrun's elastic agent.

    Returns 0, the exit code of the first rank that failed (it has said why on stderr), or 130
    after Ctrl-C.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "fewnorm.cli", *cli_args)
    except ChildFailedError as failed:
        return failed.get_first_failure()[1].exitcode or 1
    except SignalException:  # Ctrl-C: the agent has passed it on; rank 0 has saved last.pt
        return 130
    return 0
