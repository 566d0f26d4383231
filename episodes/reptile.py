"""Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018).

Per task of a meta-batch, a copy ``phi`` of the weights ``theta`` takes ``inner_steps``
steps of SGD or Adam (:mod:`fewnorm.episodes.finetune`) on minibatches of the task's
support set; the outer step then moves ``theta`` towards the tasks' mean adapted weights,

    theta <- theta + eps * mean_i(phi_i - theta),

with the meta step size ``eps`` (``--lr``, alias ``--outer-lr``) decaying linearly from
its initial value to 0 over the run, as in the paper's experiments. The step is taken
by ``torch.optim.SGD`` with the gradient set to ``theta - mean_i(phi_i)``, so that a
process group (:mod:`fewnorm.distributed`) averages it over ranks like any gradient.
With one plain SGD step on the whole task, ``phi - theta = -inner_lr * grad L(theta)``:
the update follows that task's gradient (the paper's identity; tested).

Normalizers run exactly as in MAML (:mod:`fewnorm.episodes.maml`): one ``task_scope``
per task, inner steps under ``norm_phase("support")``, support statistics refreshed
with the adapted weights before the query pass under ``norm_phase("query")``, and the
buffer policy (``by_role``: cloned per task, learned state such as SWBN's whitening
matrix written back as the tasks' mean; ``per_task``; ``global``). The training query
set is only scored (the accuracy logged); Reptile learns from the support set alone.
At test the same inner loop (``inner_steps_test`` steps on batches of
``inner_batch_test``) adapts a copy, in ``eval()``, on cloned buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fewnorm.config import RunConfig
from fewnorm.episode import Episode, StepResult
from fewnorm.episodes.algorithms import MAML
from fewnorm.episodes.finetune import Steps, adapt
from fewnorm.episodes.maml import (
    InnerLoop,
    adapted_names,
    check_ways,
    learned_buffer_names,
    task_buffers,
    write_learned_state,
)
from fewnorm.episodes.passes import query_pass
from fewnorm.episodes.plan import Decision, RunPlan
from fewnorm.errors import ConfigError
from fewnorm.norms import task_scope

Tensors = dict[str, Tensor]
#: Seed of the shuffles of test-time minibatches: the same for every fixed episode, so scores repeat.
EVAL_SHUFFLE_SEED = 0


def adapted_query_logits(
    model: nn.Module,
    episode: Episode,
    loop: InnerLoop,
    steps: Steps,
    buffers: Tensors,
    *,
    generator: torch.Generator | None = None,
    one_at_a_time: bool = False,
) -> tuple[Tensors, Tensor]:
    """Adapt a copy of the weights on the support set, then score the query: ``(ways*queries, ways)``.

    Returns the adapted weights (detached) and the query logits (no graph).
    """
    check_ways(model, episode)
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = adapted_names(dict(model.named_parameters()), loop)
    with task_scope():
        fast, _ = adapt(
            model, params, buffers, episode.support, episode.support_labels, names, steps, generator
        )
        with torch.no_grad():
            logits = query_pass(
                model,
                fast,
                buffers,
                episode.support,
                episode.query,
                no_support_yet=not (steps.steps and names),
                one_at_a_time=one_at_a_time,
            )
    return fast, logits


def reptile_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[Episode],
    loop: InnerLoop,
    steps: Steps,
    total: int,
) -> StepResult:
    """One outer step towards the mean adapted weights of ``episodes``; then the meta step size decays.

    ``total`` is the run's number of outer steps: after step ``t`` the step size is
    ``eps0 * (1 - t / total)`` (Nichol et al.'s linear schedule, to 0). Inner-loop
    minibatches are shuffled with torch's generator (saved with the run, so resumes repeat it).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    names = adapted_names(dict(model.named_parameters()), loop)
    theta = {k: p.detach() for k, p in model.named_parameters()}
    moved = {k: torch.zeros_like(theta[k]) for k in names}  # mean_i(theta - phi_i)
    learned = learned_buffer_names(model, loop)
    finals: list[Tensors] = []
    losses, accuracies = [], []
    for episode in episodes:
        buffers = task_buffers(model, loop.buffer_policy)
        fast, logits = adapted_query_logits(model, episode, loop, steps, buffers)
        for k in names:
            moved[k] += (theta[k] - fast[k]) / len(episodes)
        losses.append(float(torch.nn.functional.cross_entropy(logits, episode.query_labels)))
        accuracies.append(float((logits.argmax(1) == episode.query_labels).float().mean()))
        finals.append({k: buffers[k] for k in learned})
    for k, p in model.named_parameters():
        if k in moved:
            p.grad = moved[k]
    write_learned_state(model, finals)  # before the step: a process group's pre-step hook syncs it
    optimizer.step()
    for group in optimizer.param_groups:  # the next step's size, read by the loop's SWBN coupling too
        group["meta_steps"] = group.get("meta_steps", 0) + 1
        group["lr"] = group["meta_lr"] * max(0.0, 1 - group["meta_steps"] / total)
    return StepResult(sum(losses) / len(losses), sum(accuracies) / len(accuracies))


def reptile_evaluate(
    model: nn.Module, episode: Episode, loop: InnerLoop, steps: Steps, *, one_at_a_time: bool = False
) -> float:
    """Query accuracy after adapting a copy in ``eval()`` on cloned buffers; the model is unchanged."""
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SHUFFLE_SEED)
    buffers = task_buffers(model, "per_task")
    _, logits = adapted_query_logits(
        model, episode, loop, steps, buffers, generator=generator, one_at_a_time=one_at_a_time
    )
    return float((logits.argmax(1) == episode.query_labels).float().mean())


class Reptile(MAML):
    """Reptile on a MAML-style classifier: the model, heads, fresh heads and buffers are MAML's."""

    name = "reptile"
    first_order = True

    def __init__(self, plan: RunPlan) -> None:
        if plan.config.lr_halve_every:
            raise ConfigError(
                "reptile decays its meta step size linearly to 0 over the run (Nichol et al.); "
                "drop --lr-halve-every"
            )
        super().__init__(plan)

    def decisions(self) -> dict[str, Decision]:
        """The inner loop's optimizer and minibatches, in training and at test, and the meta step."""
        c = self.config
        train = f"{c.inner_steps} x {c.inner_batch or 'all'} images"
        test = f"{c.inner_steps_test} x {c.inner_batch_test or 'all'}"
        why = (
            f"{c.inner_optimizer or 'sgd'} lr {c.inner_lr:g}: {train} (test {test}); "
            f"meta step {c.lr:g} decaying linearly to 0"
        )
        return {"inner_loop": Decision(c.inner_optimizer or "sgd", why)}

    def optimizer(self, model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
        # meta_lr and meta_steps live in the param group, so last.pt restores the schedule.
        group = {"params": list(model.parameters()), "meta_lr": config.lr, "meta_steps": 0}
        return torch.optim.SGD([group], lr=config.lr)

    def _make_inner_loop(self, training: bool) -> InnerLoop:
        loop = super()._make_inner_loop(training)
        return InnerLoop(
            lr=loop.lr,
            steps=loop.steps,
            first_order=True,
            buffer_policy=loop.buffer_policy,
            learned_buffers=loop.learned_buffers,
            vectorize=False,  # minibatch shuffles and Adam states per task: the per-task loop
        )

    def steps(self, *, training: bool) -> Steps:
        """The inner optimizer, step size, steps and minibatch of training or test-time adaptation."""
        c = self.config
        return Steps(
            optimizer=c.inner_optimizer or "sgd",
            lr=c.inner_lr,
            steps=c.inner_steps if training else c.inner_steps_test,
            batch=c.inner_batch if training else c.inner_batch_test,
        )

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, episodes: Sequence[Episode]
    ) -> StepResult:
        loop = self.inner_loop(training=True)
        return reptile_train_step(
            model, optimizer, episodes, loop, self.steps(training=True), self.config.episodes
        )

    def evaluate(self, model: nn.Module, episode: Episode) -> float:
        loop, steps = self.inner_loop(training=False), self.steps(training=False)
        return reptile_evaluate(model, episode, loop, steps, one_at_a_time=self.config.query_one_at_a_time)

    def evaluate_many(self, model: nn.Module, episodes: Sequence[Episode]) -> list[float]:
        return [self.evaluate(model, e) for e in episodes]

    def eval_chunk(self) -> int:
        return 1
