"""fewnorm normalizers inside learn2learn code (Arnold, Mahajan, Datta, Bunner and Zarkias,
"learn2learn: A Library for Meta-Learning Research", arXiv 2008.12284).

Three pieces:

- :func:`swap_batchnorm` replaces every ``nn.BatchNorm2d`` of an existing model
  (``learn2learn.vision.models.CNN4``, ``ResNet12``, your own) by a registered
  fewnorm normalizer of the ``activation`` kind;
- :func:`clone_per_task` is ``learner.clone()`` with the buffers copied too.
  learn2learn's ``clone_module`` clones parameters but *shares* buffers that do
  not require grad, so every training-mode forward of a clone (running averages
  of BatchNorm, SWBN's whitening matrix ...) writes into the base model: the
  statistics of one task leak into the meta-model and into the next task.
  fewnorm's MAML gives each task copies of its buffers (``by_role`` keeps the
  statistics per task, ``per_task`` everything), and this clone copies them all, as
  ``--buffer-policy per_task`` does. :func:`preserved_buffers`
  is the alternative for code that keeps ``learner.clone()``: it snapshots the
  buffers and restores them when the task (forward *and* backward) is done;
- :func:`adapt` runs learn2learn's inner loop with fewnorm's phase signal: each
  support pass under ``norm_phase("support")`` and, after the last step, one
  more support pass with the adapted weights, so that support-set statistics
  (support-mode BatchNorm, TaskNorm) belong to the weights that score the query.

A task then reads (inside one ``task_scope()``)::

    maml = l2l.algorithms.MAML(swap_batchnorm(CNN4(5), "tasknorm-i"), lr=0.4)
    with task_scope():
        learner = clone_per_task(maml)
        adapt(learner, support, support_labels, steps=1)
        with norm_phase("query"):
            loss = F.cross_entropy(learner(query), query_labels)
    loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewnorm.errors import OptionError
from fewnorm.norms import NormKind, get_norm, norm_phase

INSTALL_HINT = (
    "learn2learn is not installed: run `make install`, which builds it from source "
    "(tools/build_learn2learn.sh; learn2learn 0.2.0 has no wheel for Python >= 3.11)"
)

#: Tensors carried over from the BatchNorm to its replacement when names and shapes agree.
_CARRIED = ("weight", "bias", "running_mean", "running_var")


def require_learn2learn() -> Any:
    """Import and return ``learn2learn``, or raise ImportError saying how to get it."""
    try:
        import learn2learn
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return learn2learn


def swap_batchnorm(model: nn.Module, norm: str, /, carry_state: bool = True, **options: Any) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``model`` (in place) by the fewnorm normalizer ``norm``.

    ``options`` go to the normalizer's factory (checked against its signature).
    With ``carry_state`` the BatchNorm's ``weight``, ``bias`` and running moments
    are copied into the replacement where it has tensors of the same name and
    shape (a pretrained model keeps its affine maps). Each replacement gets the
    dtype and device of the layer it replaces. Returns ``model``.

    Only ``activation``-kind normalizers fit where a BatchNorm sat: ``conv``
    kinds own the convolution and ``norm-act`` kinds replace the activation
    too, which a generic swap cannot find; they are rejected with an OptionError.
    """
    spec = get_norm(norm)
    if spec.kind is not NormKind.ACTIVATION:
        what = "owns its convolution" if spec.kind is NormKind.CONV else "replaces the activation too"
        raise OptionError(
            f"normalizer '{spec.name}' is of kind '{spec.kind}' (it {what}); swap_batchnorm only "
            "swaps activation-kind normalizers in place of BatchNorm2d: build such models with "
            "fewnorm.backbones instead"
        )
    spec.check_options(options)
    replaced: dict[int, nn.Module] = {}  # one replacement per BatchNorm object: sharing is kept
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                if id(child) not in replaced:
                    replaced[id(child)] = _replacement(child, spec.name, carry_state, options)
                setattr(parent, name, replaced[id(child)])
    return model


def _replacement(bn: nn.BatchNorm2d, norm: str, carry_state: bool, options: dict[str, Any]) -> nn.Module:
    new: nn.Module = get_norm(norm).build(bn.num_features, **options)
    like = next(iter(bn.state_dict().values()), None)
    if like is not None:
        new = new.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
    if carry_state:
        new_state = new.state_dict()
        with torch.no_grad():
            for key in _CARRIED:
                old = getattr(bn, key, None)
                if isinstance(old, Tensor) and key in new_state and new_state[key].shape == old.shape:
                    new_state[key].copy_(old)
    new.train(bn.training)
    return new


def clone_per_task(learner: Any, **clone_options: Any) -> Any:
    """``learner.clone(**clone_options)`` whose buffers are the clone's own copies.

    Parameters stay differentiable clones (learn2learn's behaviour); buffers,
    which learn2learn shares with the base model, are copied, so training-mode
    forwards of the clone never move the base model's running statistics.
    """
    clone = learner.clone(**clone_options)
    memo: dict[int, Tensor] = {}
    for module in clone.modules():
        for key, buf in module._buffers.items():
            if buf is not None:
                if id(buf) not in memo:
                    memo[id(buf)] = buf.clone()
                module._buffers[key] = memo[id(buf)]
    return clone


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` to its value on entry when the block exits.

    Wrap the whole task, backward included: restoring in place earlier would
    change tensors that the task's autograd graph may have saved.
    """
    snapshot = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(snapshot[name])


def adapt(
    learner: Any,
    support: Tensor,
    labels: Tensor,
    steps: int = 1,
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Any:
    """``steps`` calls of ``learner.adapt`` on the support loss, then support statistics refreshed.

    Call inside ``task_scope()``; ``support`` is ``(ways*shots, C, H, W)``. Each
    support pass runs under ``norm_phase("support")``; the last pass uses the
    adapted weights, so query passes under ``norm_phase("query")`` see support
    moments of the weights that score them. Returns ``learner``.
    """
    if steps < 0:
        raise OptionError(f"adapt steps must be >= 0, got {steps}")
    for _ in range(steps):
        with norm_phase("support"):
            learner.adapt(loss(learner(support), labels))
    with norm_phase("support"):
        learner(support)
    return learner
