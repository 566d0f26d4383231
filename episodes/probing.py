"""``fewnorm probe``'s measurement: the Beyond BatchNorm properties of each normalizer's backbone.

Lubana, Dick and Tanaka, "Beyond BatchNorm: Towards a Unified Understanding of
Normalization in Deep Learning", NeurIPS 2021. Each normalizer is built into the
planned backbone at initialization (seed ``s`` for the ``s``-th training episode) and
probed with :func:`fewnorm.probe.probe_model`; the per-layer statistics are averaged
over the seeds. A trained checkpoint's backbone is probed on the same episodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import build_embedding
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.protonet import protonet_loss
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.norms import NormKind
from fewnorm.probe import LayerStats, average_stats, norm_layers, normalizer_type, probe_model

#: A checkpoint's backbone is under this prefix where the model adds a head (MAML's classifier).
EMBEDDING_PREFIX = "embedding."


def probe_backbone(
    config: RunConfig, seeds: Iterable[int], state: Mapping[str, Any] | None = None
) -> list[LayerStats]:
    """Per-layer properties of ``config``'s backbone, averaged over ``seeds`` (``state``: trained
    weights instead of the initialization), each seed on its own training episode.

    The loss is ProtoNet's on a ``config.ways``-way ``config.shots``-shot episode whatever the
    algorithm: the properties belong to the backbone and its normalizer, not to the method.
    """
    plan = plan_run(config)
    store = plan.split("train")
    sampler = EpisodeSampler(store, config.ways, config.shots, config.queries, split="train")
    channels = store.image_shape[0]
    kind = normalizer_type(plan.norm, None, channels, config.hidden)
    owns_conv = plan.norm_spec.kind is NormKind.CONV
    runs = []
    for seed in seeds:
        episode = sampler.sample(torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        model = build_embedding(plan, channels)
        if state is not None:
            model.load_state_dict(state)
        layers = norm_layers(model, kind, owns_conv=owns_conv)
        runs.append(probe_model(model, layers, episode, owns_conv=owns_conv, loss=protonet_loss))
    return average_stats(runs)


def probe_normalizers(
    base: RunConfig,
    entries: Sequence[tuple[str, str, Mapping[str, Any]]],
    seeds: Iterable[int],
    trained: Mapping[str, Any] | None = None,
) -> dict[str, list[LayerStats]]:
    """``label -> per-layer statistics`` for each ``(label, norm, options)`` of ``entries``.

    ``trained`` (a loaded checkpoint) adds its backbone, labelled ``"<norm> (trained)"``,
    probed on the same episodes as the rest.
    """
    seeds = list(seeds)
    series = {}
    for label, norm, options in entries:
        config = base.model_copy(update={"norm": norm, "norm_options": dict(options)})
        series[label] = probe_backbone(config, seeds)
    if trained is not None:
        config = RunConfig.model_validate(trained["config"])
        same_episodes = {k: getattr(base, k) for k in ("ways", "shots", "queries", "data_root")}
        config = config.model_copy(update=same_episodes)
        series[f"{config.norm} (trained)"] = probe_backbone(config, seeds, embedding_state(trained["model"]))
    return series


def embedding_state(model_state: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's part of a checkpoint: a metric model is all backbone; a model with a head
    (MAML's ``FewShotClassifier``) keeps its backbone under ``embedding.`` (the meta-learned init)."""
    if not any(k.startswith(EMBEDDING_PREFIX) for k in model_state):
        return dict(model_state)
    return {
        k.removeprefix(EMBEDDING_PREFIX): v for k, v in model_state.items() if k.startswith(EMBEDDING_PREFIX)
    }
