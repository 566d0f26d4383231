"""The conformance kit's vmap rule: second-order meta-gradients through a normalizer, vmapped.

A normalizer declared ``vmap=True`` runs MAML-family meta-batches under ``torch.func.vmap``
over tasks. This check needs nothing of the pipelines (the core never imports them): a
tiny conv -> normalizer -> pool -> linear model adapts on each of three tasks with two
inner SGD steps under the phase signal, the same code runs once per task and once
vmapped over the tasks, and the two meta-gradients (float64) must agree. Buffers are
per-task copies in both, written by the support passes as the pipelines write them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fewnorm.norms import norm_phase, task_scope, vectorized_tasks

Tensors = dict[str, Tensor]
INNER_LR, INNER_STEPS, TASKS, WAYS = 0.3, 2, 3, 3


def vmap_mismatch(norm: nn.Module, in_channels: int, channels: int, seed: int) -> str | None:
    """The name of the first parameter whose vmapped meta-gradient differs, else ``None``.

    ``norm`` takes ``in_channels`` and gives ``channels`` (they differ when it owns its
    convolution). A conv runs before it: the bug this catches is in the gradient w.r.t. its input.
    """
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
    model = nn.Sequential(
        conv, norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, WAYS)
    ).double()
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(TASKS, WAYS, in_channels, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5
    query = torch.randn(TASKS, 2 * WAYS, in_channels, 6, 6, generator=g, dtype=torch.float64) * 2 + 0.5
    labels = torch.arange(WAYS)
    task = _task_loss(model, labels)

    def looped(p: Tensors) -> Tensor:
        copies = [{k: b.clone() for k, b in buffers.items()} for _ in range(TASKS)]
        return torch.stack([task(p, copies[t], support[t], query[t]) for t in range(TASKS)]).mean()

    def vectorized(p: Tensors) -> Tensor:
        copies = {k: b.expand(TASKS, *b.shape).clone() for k, b in buffers.items()}
        with vectorized_tasks():
            losses: Tensor = vmap(task, in_dims=(None, 0, 0, 0), randomness="error")(
                p, copies, support, query
            )
        return losses.mean()

    a, b = grad(looped)(params), grad(vectorized)(params)
    for key in params:
        if not torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-10):
            return key
    return None


def _task_loss(model: nn.Module, labels: Tensor) -> Callable[[Tensors, Tensors, Tensor, Tensor], Tensor]:
    def task(params: Tensors, buffers: Tensors, support: Tensor, query: Tensor) -> Tensor:
        # support (ways, C, 6, 6), query (2*ways, C, 6, 6); one task's own buffer copies
        with task_scope():
            fast = dict(params)
            for _ in range(INNER_STEPS):

                def support_loss(p: Tensors, current: Tensors) -> tuple[Tensor, Tensors]:
                    written = {k: b.clone() for k, b in current.items()}  # buffers move in place
                    with norm_phase("support"):
                        logits = functional_call(model, (p, written), (support,))  # (ways, ways)
                    return F.cross_entropy(logits, labels), written

                grads, buffers = grad(support_loss, has_aux=True)(fast, buffers)
                fast = {k: fast[k] - INNER_LR * grads[k] for k in fast}
            with norm_phase("support"):  # support statistics of the adapted weights
                functional_call(model, (fast, buffers), (support,))
            with norm_phase("query"):
                logits = functional_call(model, (fast, buffers), (query,))  # (2*ways, ways)
        return F.cross_entropy(logits, labels.repeat(2))

    return task
