"""Few-shot modes of normalizers that keep batch statistics: which moments normalize a task.

Bronskill et al., "TaskNorm: Rethinking Batch Normalization for Meta-Learning", ICML
2020, showed that a normalizer's batch statistics decide what a few-shot model is:

- ``transductive``: statistics of whatever is passed, in training and evaluation (the
  reference MAML behaviour; a query's output depends on the other queries);
- ``running``: batch statistics in training, running averages in evaluation (the
  conventional behaviour; under MAML's per-task buffers the running averages never
  learn, and evaluation collapses to chance);
- ``support``: the support set's statistics normalize support and query alike
  (MetaBN: non-transductive), through the phase signal.

Every built-in normalizer with batch statistics (BatchNorm, SWBN, IterNorm, variance
normalization, EvoNorm-B0) takes the same ``mode`` option and selects its statistics
with :func:`select_statistics`, so the modes mean the same thing for all of them. A
plugin declares its modes in ``NormSpec.modes`` (the conformance kit's ``modes`` check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fewnorm.errors import OptionError
from fewnorm.norms.phase import Phase, current_phase, task_load, task_store

#: The few-shot modes, in the order ``fewnorm norms show`` lists them.
MODES = ("transductive", "running", "support")
#: The mode the MAML family runs a normalizer in when the user names none (as BatchNorm's default).
MAML_MODE = "transductive"

if TYPE_CHECKING:  # torch stays unimported: NormSpec (torch-free) reads MODES from here
    from torch import nn

T = TypeVar("T")


def check_mode(norm: str, mode: str) -> str:
    """Reject a mode that is not one of :data:`MODES`, in one line naming the normalizer."""
    if mode not in MODES:
        raise OptionError(f"{norm} mode must be one of {', '.join(MODES)}, got '{mode}'")
    return mode


def select_statistics(
    module: nn.Module, mode: str, batch: Callable[[], T], running: Callable[[], T]
) -> tuple[T, bool]:
    """The statistics ``module`` normalizes with, and whether they were computed from this batch.

    ``batch()`` computes them from the input, ``running()`` reads the running buffers.
    The caller moves its running buffers only when the second value is true and the
    module is in training mode (``support`` mode never moves them on a query pass).
    ``support`` mode outside the phase signal (no enclosing ``norm_phase``) uses the
    batch's statistics, as BatchNorm always has.
    """
    if mode == "support":
        phase = current_phase()
        if phase is Phase.QUERY:
            stored: T | None = task_load(module)
            if stored is None:
                raise RuntimeError(
                    f"support-mode {type(module).__name__} saw a query pass before any support pass "
                    "in this task"
                )
            return stored, False
        stats = batch()
        if phase is Phase.SUPPORT:
            task_store(module, stats)
        return stats, True
    if module.training or mode == "transductive":
        return batch(), True
    return running(), False
