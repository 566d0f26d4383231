"""The support/query phase signal and the per-task scope.

``train()``/``eval()`` cannot say whether a forward pass sees a task's support
set or its query set (MAML already uses them), so episode code says it
explicitly::

    with task_scope():                 # per-task reset: support moments are dropped on exit
        with norm_phase("support"):
            z_s = model(x_support)     # phase-aware normalizers record support moments
        with norm_phase("query"):
            z_q = model(x_query)       # ... and normalize the query with them

Task state lives in the scope, keyed by module identity, not on the modules:
modules stay picklable, ``functional_call`` sees the same module objects, and
nothing of one task survives into the next.

``vectorized_tasks()`` marks code run under ``torch.func.vmap`` over the tasks of
a meta-batch: there each tensor a normalizer sees is one task's, but fused
normalization kernels must be avoided, because their batched double backward is
wrong (``F.batch_norm``: pytorch/functorch#534, measured 0.5% off in float64).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    SUPPORT = "support"
    QUERY = "query"


_phase: contextvars.ContextVar[Phase | None] = contextvars.ContextVar("fewnorm_phase", default=None)
_task: contextvars.ContextVar[dict[int, Any] | None] = contextvars.ContextVar("fewnorm_task", default=None)
_vectorized: contextvars.ContextVar[bool] = contextvars.ContextVar("fewnorm_vectorized", default=False)
_lr_scale: contextvars.ContextVar[float] = contextvars.ContextVar("fewnorm_lr_scale", default=1.0)


def current_phase() -> Phase | None:
    """The phase of the forward pass in progress, or ``None`` outside episode code."""
    return _phase.get()


@contextmanager
def _setting(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    """``var`` set to ``value`` inside the block, restored after it (exceptions included)."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def norm_phase(phase: Phase | str) -> contextlib.AbstractContextManager[None]:
    """Mark the forward passes inside the block as ``support`` or ``query``."""
    return _setting(_phase, Phase(phase))


def task_scope() -> contextlib.AbstractContextManager[None]:
    """One task: state stored with :func:`task_store` inside it is dropped on exit."""
    return _setting(_task, {})


def task_store(owner: object, value: Any) -> None:
    """Keep ``value`` for ``owner`` (a module) until the current task scope ends."""
    state = _task.get()
    if state is None:
        raise RuntimeError("task_store() needs an enclosing task_scope()")
    state[id(owner)] = value


def task_load(owner: object) -> Any | None:
    """What ``owner`` stored in the current task scope, or ``None``."""
    state = _task.get()
    return None if state is None else state.get(id(owner))


def vectorized_tasks() -> contextlib.AbstractContextManager[None]:
    """Mark the block as running under ``torch.func.vmap`` over a meta-batch's tasks."""
    return _setting(_vectorized, True)


def in_vectorized_tasks() -> bool:
    """Whether a normalizer runs inside :func:`vectorized_tasks` (avoid fused norm kernels there)."""
    return _vectorized.get()


def learning_rate_scale(scale: float) -> contextlib.AbstractContextManager[None]:
    """Mark the block as training at ``scale`` times the run's initial learning rate.

    The training loop sets it from its schedule, so that normalizers with a learning
    rate of their own (SWBN's whitening step) can keep their ratio to the network's.
    """
    return _setting(_lr_scale, float(scale))


def current_learning_rate_scale() -> float:
    """The training loop's learning rate over its initial one (1.0 outside a training step)."""
    return _lr_scale.get()
