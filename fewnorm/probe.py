"""The signal-propagation diagnostics of "Beyond BatchNorm" (Lubana, Dick and Tanaka, NeurIPS 2021).

For each normalization layer of a backbone, on one episode's images:

- activation variance: mean over channels of the variance over (N, H, W) of the
  post-normalization activations (population variance, ``unbiased=False``);
- mean cosine similarity between samples: flatten each sample's activations,
  unit-normalize, Gram matrix ``M``, mean of the off-diagonal entries;
- stable rank of the samples: ``tr(M) / ||M||_2`` (``||.||_2`` the spectral norm),
  between 1 (all samples parallel) and N (orthogonal);
- gradient norm: Frobenius norm of ``dL/dz`` with ``z`` the conv output feeding
  the normalizer and ``L`` the ProtoNet loss of the episode.

Where the probe looks: a forward hook on every normalizer module. Its output is
the post-normalization activation (before the ReLU; for ``norm-act`` normalizers
such as FRN after their built-in activation). Its input is the conv output, except
for ``conv``-kind normalizers (PatchNorm, weight standardization), which own their
conv: there ``z`` is the normalizer's output. Support and query passes of the
episode are concatenated along the batch.

The metric functions are pure (tensor in, float out); :func:`probe_model` hooks a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from fewnorm.errors import ConfigError
from fewnorm.norms.spec import BoundNorm


@dataclass(frozen=True)
class LayerStats:
    """The four diagnostics of one normalization layer (``layer`` counts from 0)."""

    layer: int
    name: str
    variance: float
    cosine: float
    stable_rank: float
    grad_norm: float


def activation_variance(a: Tensor) -> float:
    """Mean over channels of Var over (N, H, W): ``a`` is (N, C, H, W) or (N, C)."""
    dims = (0, *range(2, a.dim()))
    return float(a.double().var(dim=dims, unbiased=False).mean())


def sample_gram(a: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine Gram matrix of the samples: flatten, unit-normalize, ``U U^T`` (N, N)."""
    u = a.double().flatten(1)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(eps)
    return u @ u.T


def mean_cosine_similarity(a: Tensor) -> float:
    """Mean off-diagonal entry of :func:`sample_gram` (needs two samples or more)."""
    m = sample_gram(a)
    n = m.shape[0]
    if n < 2:
        raise ConfigError("cosine similarity between samples needs at least two samples")
    return float((m.sum() - m.diagonal().sum()) / (n * (n - 1)))


def stable_rank(a: Tensor) -> float:
    """``tr(M) / ||M||_2`` of the samples' cosine Gram matrix ``M`` (1 = collapsed, N = orthogonal)."""
    m = sample_gram(a)
    top = torch.linalg.matrix_norm(m, ord=2)
    return float(m.trace() / top) if top > 0 else 0.0


def gradient_norm(g: Tensor) -> float:
    """Frobenius norm of a gradient tensor."""
    return float(g.double().norm())


def norm_layers(
    model: nn.Module, norm_type: type[nn.Module], *, owns_conv: bool = False
) -> list[tuple[str, nn.Module]]:
    """The normalization layers of ``model``, in definition order, with their module paths.

    A module of exactly ``norm_type`` that follows an ``nn.Conv2d`` in its parent
    (every fewnorm conv-norm block), or any module of that type when the
    normalizer ``owns_conv``; an ``nn.Identity`` elsewhere (``none`` is one) is not
    taken for a normalizer.
    """
    found = []
    for path, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            after_conv = i > 0 and isinstance(children[i - 1][1], nn.Conv2d)
            if type(child) is norm_type and (owns_conv or after_conv):
                found.append((f"{path}.{name}" if path else name, child))
    return found


def normalizer_type(
    norm: str | BoundNorm, options: Mapping[str, Any] | None, in_channels: int, hidden: int
) -> type[nn.Module]:
    """The module class the registry builds for ``norm`` (what :func:`norm_layers` looks for)."""
    from fewnorm.backbones import conv_norm_act, norm_layer
    from fewnorm.norms import NormKind

    bound = norm_layer(norm, options)
    block = conv_norm_act(in_channels, hidden, bound)
    return type(block[0] if bound.spec.kind is NormKind.CONV else block[1])


#: An episode's loss through a model: ``loss(model, episode) -> (loss, accuracy)``, such as
#: :func:`fewnorm.episodes.protonet.protonet_loss` (passed in: the core never imports the pipelines).
EpisodeLoss = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]


def probe_model(
    model: nn.Module,
    layers: Sequence[tuple[str, nn.Module]],
    episode: Any,
    *,
    owns_conv: bool,
    loss: EpisodeLoss,
) -> list[LayerStats]:
    """Forward and backward ``loss`` of ``episode`` through ``model`` (train mode) and measure
    every layer in ``layers``; ``owns_conv`` for ``conv``-kind normalizers (see above).
    The model's parameters get gradients; nothing else changes but training-mode buffers."""
    if not layers:
        raise ConfigError("the model has no normalization layers to probe")
    outputs: list[list[Tensor]] = [[] for _ in layers]
    inputs: list[list[Tensor]] = [[] for _ in layers]

    def hook(i: int) -> Any:
        def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            z = output if owns_conv else args[0]
            if z.requires_grad:
                z.retain_grad()
            outputs[i].append(output)
            inputs[i].append(z)

        return record

    handles = [module.register_forward_hook(hook(i)) for i, (_, module) in enumerate(layers)]
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        value, _ = loss(model, episode)
        value.backward()
    finally:
        for handle in handles:
            handle.remove()
    stats = []
    for i, (name, _) in enumerate(layers):
        a = torch.cat([t.detach() for t in outputs[i]])
        grads = [z.grad if z.grad is not None else torch.zeros_like(z) for z in inputs[i]]
        stats.append(
            LayerStats(
                i,
                name,
                activation_variance(a),
                mean_cosine_similarity(a),
                stable_rank(a),
                gradient_norm(torch.cat(grads)),
            )
        )
    return stats


def average_stats(runs: Sequence[Sequence[LayerStats]]) -> list[LayerStats]:
    """Layer-wise mean of several probes (e.g. over seeds) of the same architecture."""
    if not runs:
        raise ConfigError("nothing to average")
    numeric = [f.name for f in fields(LayerStats) if f.name not in ("layer", "name")]
    out = []
    for per_layer in zip(*runs, strict=True):
        means = {k: sum(getattr(s, k) for s in per_layer) / len(per_layer) for k in numeric}
        out.append(LayerStats(per_layer[0].layer, per_layer[0].name, **means))
    return out
