"""A MAML-family meta-batch run as one computation: ``torch.func.vmap`` over its tasks.

The per-task loop (:func:`fewnorm.episodes.maml.maml_train_step`) runs the tasks of
a meta-batch one after another, each a chain of small convolutions on 5 to 100
images. Here the tasks run together: ``vmap`` turns each convolution with per-task
fast weights into one grouped convolution over every task, and the inner-loop
gradient is ``torch.func.grad`` (``torch.autograd.grad`` cannot run under
``vmap``). The meta-gradient is the same as the loop's up to rounding (tested for
every normalizer that declares ``vmap=True``); memory holds the whole meta-batch's
activations at once instead of one task's.

Per task, the semantics are the loop's: one ``task_scope()``, support passes under
``norm_phase("support")``, the support statistics refreshed with the adapted
weights when some normalizer keeps them, the query under ``norm_phase("query")``,
and each task its own copy of the buffers (``by_role`` and ``per_task`` policies;
``global`` cannot be vectorized, since T tasks cannot write one buffer). The tasks'
final values of the buffers named in ``keep_buffers`` come back, so that the caller
can write learned state back as the per-task loop does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fewnorm.episode import Episode
from fewnorm.episodes.passes import query_pass
from fewnorm.norms import norm_phase, task_scope, vectorized_tasks

Tensors = dict[str, Tensor]


def vectorize_blocker(episodes: Sequence[Episode], buffer_policy: str) -> str | None:
    """Why this meta-batch cannot run vectorized (``None``: it can)."""
    if len(episodes) < 2:
        return "a meta-batch of one task"
    if buffer_policy not in ("by_role", "per_task"):
        return f"buffer policy '{buffer_policy}' (tasks would write one buffer together)"
    first = episodes[0]
    if any(e.support.shape != first.support.shape or e.query.shape != first.query.shape for e in episodes):
        return "episodes of different shapes"
    return None


def _stack(episodes: Sequence[Episode]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (
        torch.stack([e.support for e in episodes]),  # (T, ways*shots, C, H, W)
        torch.stack([e.support_labels for e in episodes]),  # (T, ways*shots)
        torch.stack([e.query for e in episodes]),  # (T, ways*queries, C, H, W)
        torch.stack([e.query_labels for e in episodes]),  # (T, ways*queries)
    )


def _task_buffers(model: nn.Module, tasks: int) -> Tensors:
    """One copy of every buffer per task: ``(T, *shape)``, mapped over by ``vmap``."""
    return {name: b.detach().expand(tasks, *b.shape).clone() for name, b in model.named_buffers()}


def vectorized_task_losses(
    model: nn.Module,
    episodes: Sequence[Episode],
    *,
    lr: float,
    steps: int,
    adapted: Sequence[str],
    first_order: bool,
    differentiable: bool = True,
    one_at_a_time: bool = False,
    params: Tensors | None = None,
    keep_buffers: Sequence[str] = (),
) -> tuple[Tensor, Tensor, Tensors]:
    """Query losses ``(T,)`` after adaptation (differentiable in the meta-parameters), accuracies
    ``(T,)``, and each task's final value ``(T, *shape)`` of the buffers named in ``keep_buffers``.

    ``adapted`` names the parameters the inner loop updates (all of them for MAML,
    the head's for ANIL). With ``first_order`` the inner gradients are constants.
    Without ``differentiable`` (evaluation) the passes after the inner loop record no
    graph; ``one_at_a_time`` scores each query image alone. ``params`` (default: the
    model's own) are the weights adaptation starts from.
    """
    params = dict(model.named_parameters()) if params is None else params
    names = list(adapted)

    def one_task(
        buffers: Tensors, support: Tensor, labels: Tensor, query: Tensor, qlabels: Tensor
    ) -> tuple[Tensor, Tensors]:
        # One task's tensors: support (ways*shots, C, H, W), query (ways*queries, C, H, W).
        with task_scope():
            fast = dict(params)
            for _ in range(steps if names else 0):
                frozen = dict(fast)

                def support_loss(
                    moving: Tensors, current: Tensors, frozen: Tensors = frozen
                ) -> tuple[Tensor, Tensors]:
                    # Buffers move in place; under grad() only tensors made inside may be written,
                    # so the pass writes copies and hands them on (the loop's in-place semantics).
                    written = {k: b.clone() for k, b in current.items()}
                    with norm_phase("support"):
                        logits = functional_call(model, ({**frozen, **moving}, written), (support,))
                    return F.cross_entropy(logits, labels), written  # logits: (ways*shots, ways)

                grads, buffers = grad(support_loss, has_aux=True)({k: fast[k] for k in names}, buffers)
                for k in names:
                    g = grads[k].detach() if first_order else grads[k]
                    fast[k] = fast[k] - lr * g
            with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
                logits = query_pass(
                    model,
                    fast,
                    buffers,
                    support,
                    query,
                    no_support_yet=not (steps and names),
                    one_at_a_time=one_at_a_time,
                )
        loss = F.cross_entropy(logits, qlabels)  # logits: (ways*queries, ways)
        accuracy = (logits.argmax(1) == qlabels).float().mean()  # float32, as the per-task loop's
        kept = {k: buffers[k].detach() for k in keep_buffers}
        return torch.stack([loss, accuracy.to(loss.dtype)]), kept

    support, labels, query, qlabels = _stack(episodes)
    with vectorized_tasks():
        out, kept = vmap(one_task, randomness="error")(
            _task_buffers(model, len(episodes)), support, labels, query, qlabels
        )  # (T, 2), {name: (T, *shape)}
    return out[:, 0], out[:, 1].detach(), kept
