"""What a study measures besides training: properties at initialization, queries one at a time, memory.

- :func:`probe_at_init` -- the "Beyond BatchNorm" signal-propagation properties (Lubana,
  Dick and Tanaka, NeurIPS 2021; :mod:`fewnorm.probe`) of a freshly initialized backbone,
  averaged over seeds, each seed on its own training episode (as ``fewnorm probe`` does);
- :func:`one_at_a_time` -- a finished run's accuracy on its fixed test episodes with each
  query image scored alone, which takes from a transductive normalizer the statistics of
  the other queries;
- :func:`step_memory` -- the bytes autograd keeps for the backward of one training step
  (each storage once), a measure of memory that does not depend on the allocator or on
  what else the process holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fewnorm import data
from fewnorm.config import RunConfig
from fewnorm.episodes.algorithms import build_embedding, get_algorithm
from fewnorm.episodes.evaluation import evaluate_checkpoint
from fewnorm.episodes.protonet import protonet_loss
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.norms import NormKind, get_norm
from fewnorm.probe import LayerStats, average_stats, norm_layers, normalizer_type, probe_model


def _train_sampler(config: RunConfig, ways: int, shots: int, queries: int) -> EpisodeSampler:
    store = data.load_split(config.dataset, "train", config.data_root, **config.data_options)
    return EpisodeSampler(store, ways, shots, queries, split="train")


def probe_at_init(
    config: RunConfig, seeds: Sequence[int], state: dict[str, Any] | None = None
) -> list[LayerStats]:
    """Per-layer properties of ``config``'s backbone at initialization, averaged over ``seeds``
    (``state``: a trained backbone's weights instead, probed on the same episodes).

    The loss is ProtoNet's on a ``config.ways``-way ``config.shots``-shot episode for every
    algorithm: the properties belong to the backbone and its normalizer, not to the method.
    """
    sampler = _train_sampler(config, config.ways, config.shots, config.queries)
    channels = sampler.store.image_shape[0]
    kind = normalizer_type(config.norm, config.norm_options, channels, config.hidden)
    owns_conv = get_norm(config.norm).kind is NormKind.CONV
    runs = []
    for seed in seeds:
        episode = sampler.sample(torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        model = build_embedding(config, channels)
        if state is not None:
            model.load_state_dict(state)
        layers = norm_layers(model, kind, owns_conv=owns_conv)
        runs.append(probe_model(model, layers, episode, owns_conv=owns_conv, loss=protonet_loss))
    return average_stats(runs)


def one_at_a_time(run_dir: Path, episodes: int | None = None) -> list[float]:
    """Accuracies of the run's best checkpoint on its first ``episodes`` test episodes (default:
    all of them), each query scored alone; episode ``i`` is the one the run was tested on."""
    result = evaluate_checkpoint(run_dir, episodes=episodes, overrides={"query_one_at_a_time": True})
    return result.accuracies


def step_memory(config: RunConfig, seed: int = 0) -> int:
    """Bytes of the distinct storages autograd saves during one training step of ``config``.

    Measured on the per-task loop (``vectorize`` off: saved-tensor hooks do not see inside
    vmap), at the run's training ways, shots and queries.
    """
    config = config.model_copy(update={"vectorize": False})
    sampler = _train_sampler(
        config, config.effective_train_ways, config.effective_train_shots, config.train_queries
    )
    torch.manual_seed(seed)
    algorithm = get_algorithm(config)
    model = algorithm.build(config, sampler.store.image_shape[0])
    optimizer = algorithm.optimizer(model, config)
    episodes = [sampler.sample(torch.Generator().manual_seed(seed + j)) for j in range(config.meta_batch)]
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        algorithm.train_step(model, optimizer, episodes)
    return sum(seen.values())
