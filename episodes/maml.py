"""MAML, first-order MAML and ANIL: one inner loop, pure step functions.

- MAML: Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast
  Adaptation of Deep Networks", ICML 2017 (second order: the meta-gradient
  differentiates through the inner-loop updates).
- First-order MAML: the same paper's first-order approximation (also Nichol,
  Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018): the
  inner-loop gradients are constants, so the meta-gradient is the query-loss
  gradient at the adapted weights.
- ANIL: Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse?",
  ICLR 2020: the inner loop adapts only the head (parameters ``head.*``).

The inner loop runs ``functional_call(model, (fast_params, task_buffers), x)``;
the meta-model's parameters are never written by it. Per task, inside one
:func:`~fewnorm.norms.task_scope`: each inner step's support pass runs under
``norm_phase("support")``; after the last step, normalizers that keep support
statistics get them recomputed by one more support pass with the adapted
weights; the query pass runs under ``norm_phase("query")``.

Train/eval mode: training runs in ``train()``, evaluation in ``eval()``; which
statistics a normalizer uses in each is its own option (BatchNorm ``mode``):
``transductive`` uses batch statistics in both (the reference MAML
behaviour), ``running`` uses running averages at evaluation (near chance for
MAML, Bronskill et al., ICML 2020), ``support`` the support set's moments.

Buffers (``buffer_policy``) by their role (``NormSpec.learned_buffers``):
``by_role`` (the default) clones every buffer for each task; per-task statistics
(running moments) are dropped with the clones, while learned state (SWBN's
whitening matrix) is written back after the outer step as the mean of the
tasks' final values: every task of a meta-batch starts from the same state, so
the per-task loop and the vectorized path agree, and the state enters the
forward as a constant, so the meta-gradient is the one ``per_task`` computes.
``per_task`` drops every clone (training never moves the meta-model's buffers;
running-mode normalizers keep their initial averages); ``global`` passes the
meta-model's own buffers, so every training update lands in it (the
conventional BatchNorm ablation). Evaluation always uses clones: it never
changes the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.episode import Episode, StepResult
from fewnorm.episodes.passes import query_pass
from fewnorm.episodes.vectorized import vectorize_blocker, vectorized_task_losses
from fewnorm.errors import ConfigError
from fewnorm.norms import norm_phase, task_scope

Tensors = dict[str, Tensor]
HEAD_PREFIX = "head."


@dataclass(frozen=True)
class InnerLoop:
    """How a task adapts: step size, steps, order, which parameters, which buffers."""

    lr: float
    steps: int
    first_order: bool = False
    head_only: bool = False  # ANIL: adapt only parameters under ``head.``
    buffer_policy: str = "by_role"  # by_role | per_task | global (fewnorm.config.BUFFER_POLICIES)
    learned_buffers: tuple[str, ...] = ()  # attribute names of buffers that are learned state (by_role)
    vectorize: bool = True  # run a meta-batch's tasks together (torch.func.vmap) where the normalizer allows
    chunks: int = 1  # vectorized: vmap calls per meta-batch, each chunk's graph freed after its backward

    def adapted(self, name: str) -> bool:
        return not self.head_only or name.startswith(HEAD_PREFIX)


def task_buffers(model: nn.Module, policy: str) -> Tensors:
    """The buffers a task runs with: clones (``by_role``, ``per_task``) or the model's own (``global``)."""
    if policy == "global":
        return dict(model.named_buffers())
    if policy in ("by_role", "per_task"):
        return {name: b.clone() for name, b in model.named_buffers()}
    raise ConfigError(f"buffer_policy must be by_role, per_task or global, got '{policy}'")


def learned_buffer_names(model: nn.Module, loop: InnerLoop) -> list[str]:
    """The model's buffers that training writes back under ``by_role``: learned state, not statistics."""
    if loop.buffer_policy != "by_role" or not loop.learned_buffers:
        return []
    return [name for name, _ in model.named_buffers() if name.rsplit(".", 1)[-1] in loop.learned_buffers]


@torch.no_grad()
def write_learned_state(model: nn.Module, finals: Sequence[Tensors]) -> None:
    """Set each learned buffer named in ``finals`` to the mean of the tasks' final values.

    Every task started from the model's value, so this is one step along the tasks'
    mean update; with one task it is that task's final value exactly. Called before the
    optimizer step: in a process group (:mod:`fewnorm.distributed`) the pre-step hook then
    gives every rank rank 0's buffers, learned state included, so replicas never drift
    (the state learns from rank 0's share of each step's tasks).
    """
    if not finals or not finals[0]:
        return
    buffers = dict(model.named_buffers())
    for name in finals[0]:
        buffers[name].copy_(torch.stack([f[name] for f in finals]).mean(0))


def adapted_names(params: Tensors, loop: InnerLoop) -> list[str]:
    """Names of the parameters the inner loop adapts: those requiring grad (ANIL: the head's)."""
    return [k for k, p in params.items() if p.requires_grad and loop.adapted(k)]


def inner_loop(
    model: nn.Module,
    params: Tensors,
    buffers: Tensors,
    support: Tensor,
    labels: Tensor,
    loop: InnerLoop,
    *,
    create_graph: bool,
) -> Tensors:
    """``loop.steps`` SGD steps on the support loss from ``params``; returns the fast weights.

    Call inside a ``task_scope()``. With ``create_graph`` the returned weights
    keep the graph of the updates (second order); without it the gradients
    are constants (first order). Parameters ``loop`` does not adapt come back
    unchanged (the same tensors).
    """
    fast = dict(params)
    names = adapted_names(params, loop)
    for _ in range(loop.steps if names else 0):
        with norm_phase("support"):
            logits = functional_call(model, (fast, buffers), (support,))  # (ways*shots, ways)
        loss = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(
            loss, [fast[k] for k in names], create_graph=create_graph, allow_unused=True
        )
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                fast[k] = fast[k] - loop.lr * g
    return fast


def adapted_query_logits(
    model: nn.Module,
    params: Tensors,
    buffers: Tensors,
    episode: Episode,
    loop: InnerLoop,
    *,
    create_graph: bool,
    one_at_a_time: bool = False,
    differentiable: bool = True,
) -> Tensor:
    """Adapt on the support set, refresh support statistics, score the query: ``(ways*queries, ways)``.

    ``one_at_a_time`` scores each query image alone, with the same adapted
    weights and support statistics (exposes transductive normalizers). Without
    ``differentiable`` the passes after the inner loop record no graph.
    """
    with task_scope():
        fast = inner_loop(
            model, params, buffers, episode.support, episode.support_labels, loop, create_graph=create_graph
        )
        adapted = loop.steps > 0 and bool(adapted_names(params, loop))
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            logits = query_pass(
                model,
                fast,
                buffers,
                episode.support,
                episode.query,
                no_support_yet=not adapted,
                one_at_a_time=one_at_a_time,
            )
    return logits


def check_ways(model: nn.Module, episode: Episode) -> None:
    """Reject an episode whose ways differ from the head's outputs, in one line."""
    head = getattr(model, "head", None)
    outputs = getattr(head, "out_features", None)
    if outputs is not None and outputs != episode.ways:
        raise ConfigError(
            f"the MAML head has {outputs} outputs but the episode is {episode.ways}-way; "
            f"train and evaluate with the same --ways"
        )


def maml_task_loss(
    model: nn.Module, episode: Episode, loop: InnerLoop, buffers: Tensors | None = None
) -> tuple[Tensor, Tensor]:
    """Query cross-entropy after adaptation (differentiable w.r.t. the meta-parameters) and accuracy.

    ``buffers`` (default: :func:`task_buffers` of the loop's policy) are the task's buffers;
    the passes update them in place, so a caller that passes its own reads the task's final state.
    """
    check_ways(model, episode)
    params: Tensors = dict(model.named_parameters())
    buffers = task_buffers(model, loop.buffer_policy) if buffers is None else buffers
    logits = adapted_query_logits(model, params, buffers, episode, loop, create_graph=not loop.first_order)
    loss = F.cross_entropy(logits, episode.query_labels)
    accuracy = (logits.argmax(1) == episode.query_labels).float().mean()
    return loss, accuracy


def maml_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode], loop: InnerLoop
) -> StepResult:
    """One outer step: the meta-gradient averaged over ``episodes``, then one optimizer step.

    With ``loop.vectorize`` (and a meta-batch :func:`vectorize_blocker` accepts) the
    tasks run together under ``torch.func.vmap``, in ``loop.chunks`` groups of nearly equal
    size, each group's graph freed after its backward (vmap keeps about twice a task's
    activations per task, ``benchmarks/maml_memory.py``); otherwise one after another, each
    task's graph freed after its backward so memory does not grow with the meta-batch.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    learned = learned_buffer_names(model, loop)
    finals: list[Tensors] = []  # each task's final learned state (by_role)
    if loop.vectorize and vectorize_blocker(episodes, loop.buffer_policy) is None:
        for episode in episodes:  # the per-task loop checks in maml_task_loss
            check_ways(model, episode)
        adapted = adapted_names(dict(model.named_parameters()), loop)
        chunk_losses, chunk_accuracies = [], []
        for chunk in task_chunks(episodes, loop.chunks):
            losses, accuracies, states = vectorized_task_losses(
                model,
                chunk,
                lr=loop.lr,
                steps=loop.steps,
                adapted=adapted,
                first_order=loop.first_order,
                keep_buffers=learned,
            )  # (t,), (t,), {name: (t, *shape)}
            (losses.sum() / len(episodes)).backward()  # the meta-batch's mean, a chunk at a time
            chunk_losses.append(losses.detach())
            chunk_accuracies.append(accuracies)
            finals += [{k: v[i] for k, v in states.items()} for i in range(len(chunk))]
        write_learned_state(model, finals)  # before the step: a process group's pre-step hook syncs it
        optimizer.step()
        return StepResult(float(torch.cat(chunk_losses).mean()), float(torch.cat(chunk_accuracies).mean()))
    loss_values, accuracy_values = [], []
    for episode in episodes:
        buffers = task_buffers(model, loop.buffer_policy)
        loss, accuracy = maml_task_loss(model, episode, loop, buffers)
        (loss / len(episodes)).backward()
        loss_values.append(loss.item())
        accuracy_values.append(accuracy.item())
        finals.append({k: buffers[k] for k in learned})
    write_learned_state(model, finals)  # before the step: a process group's pre-step hook syncs it
    optimizer.step()
    return StepResult(sum(loss_values) / len(loss_values), sum(accuracy_values) / len(accuracy_values))


def task_chunks(episodes: Sequence[Episode], chunks: int) -> list[Sequence[Episode]]:
    """``episodes`` in ``chunks`` consecutive groups of sizes differing by at most one (none empty)."""
    if chunks < 1:
        raise ConfigError(f"vectorize chunks must be a positive integer, got {chunks}")
    count = min(chunks, len(episodes))
    size, extra = divmod(len(episodes), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [episodes[a:b] for a, b in itertools.pairwise(bounds)]


def maml_evaluate(
    model: nn.Module, episode: Episode, loop: InnerLoop, *, one_at_a_time: bool = False
) -> float:
    """Query accuracy after adapting a copy of the weights; the model itself is left unchanged.

    Runs in ``eval()`` mode with first-order inner steps (no meta-gradient is
    needed) on detached weights and cloned buffers, whatever the buffer policy.
    """
    check_ways(model, episode)
    model.eval()
    params = {k: p.detach().requires_grad_(p.requires_grad) for k, p in model.named_parameters()}
    buffers = task_buffers(model, "per_task")
    with torch.enable_grad():
        logits = adapted_query_logits(
            model,
            params,
            buffers,
            episode,
            loop,
            create_graph=False,
            one_at_a_time=one_at_a_time,
            differentiable=False,
        )
    return float((logits.argmax(1) == episode.query_labels).float().mean())


def maml_evaluate_many(
    model: nn.Module, episodes: Sequence[Episode], loop: InnerLoop, *, one_at_a_time: bool = False
) -> list[float]:
    """:func:`maml_evaluate` of each episode, the episodes adapted together where ``loop`` allows.

    The same protocol (``eval()``, first-order inner steps on detached weights, cloned
    buffers); vectorized, the accuracies equal the per-episode ones up to rounding.
    """
    if not loop.vectorize or vectorize_blocker(episodes, "per_task") is not None:
        return [maml_evaluate(model, e, loop, one_at_a_time=one_at_a_time) for e in episodes]
    for episode in episodes:
        check_ways(model, episode)
    model.eval()
    params: Tensors = {k: p.detach().requires_grad_(p.requires_grad) for k, p in model.named_parameters()}
    with torch.enable_grad():
        _, accuracies, _ = vectorized_task_losses(
            model,
            episodes,
            lr=loop.lr,
            steps=loop.steps,
            adapted=adapted_names(params, loop),
            first_order=True,
            differentiable=False,
            one_at_a_time=one_at_a_time,
            params=params,
        )  # (T,)
    return [float(a) for a in accuracies]
