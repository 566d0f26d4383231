"""Forward passes of one task under the phase signal, shared by the per-task and vectorized MAML."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.norms import norm_phase, task_load

Tensors = dict[str, Tensor]


def keeps_task_state(model: nn.Module) -> bool:
    """Whether some module stored support statistics in the current task scope."""
    return any(task_load(m) is not None for m in model.modules())


def query_pass(
    model: nn.Module,
    fast: Tensors,
    buffers: Tensors,
    support: Tensor,
    query: Tensor,
    *,
    no_support_yet: bool,
    one_at_a_time: bool = False,
) -> Tensor:
    """Refresh the support statistics with the adapted weights, then score the query set.

    The refresh pass is skipped when the inner loop's support passes showed that
    no module keeps support statistics (it would change nothing).
    """
    if no_support_yet or keeps_task_state(model):
        with norm_phase("support"):  # support statistics of the adapted weights
            functional_call(model, (fast, buffers), (support,))
    with norm_phase("query"):
        if one_at_a_time:
            return torch.cat([functional_call(model, (fast, buffers), (q[None],)) for q in query])
        return functional_call(model, (fast, buffers), (query,))  # (ways*queries, ways)
