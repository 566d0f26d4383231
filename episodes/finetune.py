"""Minibatch gradient steps on one task's images: Reptile's inner loop and the baselines' fine-tuning.

Reptile (Nichol, Achiam and Schulman, 2018) adapts a copy of the weights with a few
steps of SGD or Adam on minibatches of a task; the fine-tuning baselines (Chen et al.,
ICLR 2019) train a fresh head on minibatches of the support set. Both run here as pure
functions of ``functional_call`` weights: the model's own parameters are never written.

Minibatches follow both papers' code: the images are shuffled, taken ``batch`` at a time,
and reshuffled when they run out (``batch=None``: every step sees all of them). Every
step's forward runs under ``norm_phase("support")`` inside the caller's ``task_scope``,
on the caller's buffers, as MAML's inner loop does (:mod:`fewnorm.episodes.maml`).

Optimizers (:data:`fewnorm.config.INNER_OPTIMIZERS`):

- ``sgd``: ``w <- w - lr g``;
- ``adam``: Adam with ``beta1 = 0``, ``beta2 = 0.999``, ``eps = 1e-8``, as Nichol et al.'s
  code (its state starts fresh for every task);
- ``sgd-momentum``: Chen et al.'s fine-tuning optimizer, PyTorch's SGD with momentum 0.9,
  dampening 0.9 and weight decay 1e-3.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fewnorm.errors import ConfigError
from fewnorm.norms import norm_phase

Tensors = dict[str, Tensor]

ADAM_BETA2, ADAM_EPS = 0.999, 1e-8
MOMENTUM, DAMPENING, WEIGHT_DECAY = 0.9, 0.9, 1e-3


@dataclass(frozen=True)
class Steps:
    """How a task's copy of the weights learns: optimizer, step size, steps, images per step."""

    optimizer: str = "sgd"  # sgd | adam | sgd-momentum
    lr: float = 0.01
    steps: int = 1
    batch: int | None = None  # None: every image in every step


def minibatches(count: int, batch: int | None, generator: torch.Generator | None) -> Iterator[Tensor]:
    """Index tensors of ``batch`` images at a time, cycling through fresh shuffles of ``count``."""
    size = count if batch is None else min(batch, count)
    while True:
        order = torch.arange(count) if batch is None else torch.randperm(count, generator=generator)
        for start in range(0, count - size + 1, size):
            yield order[start : start + size]


def optimizer_step(
    kind: str, params: Tensors, grads: Tensors, state: Tensors, lr: float, step: int
) -> Tensors:
    """``params`` after one step of ``kind``; ``state`` (moments) moves in place; ``step`` counts from 1."""
    out = dict(params)
    for k, g in grads.items():
        if kind == "sgd":
            out[k] = params[k] - lr * g
        elif kind == "adam":  # beta1 = 0: the step is g / sqrt(v_hat), Nichol et al.'s inner Adam
            v = state[k] = ADAM_BETA2 * state.get(k, torch.zeros_like(g)) + (1 - ADAM_BETA2) * g * g
            out[k] = params[k] - lr * g / ((v / (1 - ADAM_BETA2**step)).sqrt() + ADAM_EPS)
        elif kind == "sgd-momentum":  # torch.optim.SGD(momentum=0.9, dampening=0.9, weight_decay=1e-3)
            g = g + WEIGHT_DECAY * params[k]
            buf = state[k] = g if k not in state else MOMENTUM * state[k] + (1 - DAMPENING) * g
            out[k] = params[k] - lr * buf
        else:
            raise ConfigError(f"inner_optimizer must be sgd, adam or sgd-momentum, got '{kind}'")
    return out


def adapt(
    model: nn.Module,
    params: Tensors,
    buffers: Tensors,
    images: Tensor,
    labels: Tensor,
    names: Sequence[str],
    steps: Steps,
    generator: torch.Generator | None = None,
) -> tuple[Tensors, list[tuple[float, float]]]:
    """``steps.steps`` optimizer steps on the cross-entropy of ``model`` over minibatches of ``images``.

    Only the parameters in ``names`` move; the returned weights are detached (first
    order: nothing here is differentiated through). ``buffers`` move in place, as the
    forward passes move them. Returns the weights and each step's (loss, accuracy).
    Call inside a ``task_scope()``; ``generator`` draws the shuffles.
    """
    fast = {k: v.detach() for k, v in params.items()}
    state: Tensors = {}
    history = []
    batches = minibatches(len(images), steps.batch, generator)
    for step in range(1, steps.steps + 1 if names else 1):
        rows = next(batches)
        moving = {k: fast[k].requires_grad_(True) for k in names}
        with torch.enable_grad(), norm_phase("support"):
            logits = functional_call(model, ({**fast, **moving}, buffers), (images[rows],))  # (batch, ways)
            loss = F.cross_entropy(logits, labels[rows])
            grads = torch.autograd.grad(loss, [moving[k] for k in names])
        accuracy = (logits.argmax(1) == labels[rows]).float().mean()
        history.append((loss.item(), accuracy.item()))
        new = optimizer_step(
            steps.optimizer,
            {k: moving[k].detach() for k in names},
            dict(zip(names, grads, strict=True)),
            state,
            steps.lr,
            step,
        )
        fast = {**fast, **new}
    return fast, history
