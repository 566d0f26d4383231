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
from fewnorm.episodes.evaluation import evaluate_checkpoint
from fewnorm.episodes.plan import plan_run
from fewnorm.episodes.probing import probe_backbone
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.probe import LayerStats


def _train_sampler(config: RunConfig, ways: int, shots: int, queries: int) -> EpisodeSampler:
    store = data.load_split(config.dataset, "train", config.data_root, **config.data_options)
    return EpisodeSampler(store, ways, shots, queries, split="train")


def probe_at_init(
    config: RunConfig, seeds: Sequence[int], state: dict[str, Any] | None = None
) -> list[LayerStats]:
    """Per-layer properties of ``config``'s backbone at initialization, averaged over ``seeds``
    (``state``: a trained backbone's weights instead, probed on the same episodes).

    The loss is ProtoNet's on a ``config.ways``-way ``config.shots``-shot episode for every
    algorithm: the properties belong to the backbone and its normalizer, not to the method
    (:func:`fewnorm.episodes.probing.probe_backbone`, as ``fewnorm probe`` measures).
    """
    return probe_backbone(config, seeds, state)


def one_at_a_time(run_dir: Path, episodes: int | None = None) -> list[float]:
    """Accuracies of the run's best checkpoint on its first ``episodes`` test episodes (default:
    all of them), each query scored alone; episode ``i`` is the one the run was tested on."""
    result = evaluate_checkpoint(run_dir, episodes=episodes, overrides={"query_one_at_a_time": True})
    return result.accuracies


def step_memory(config: RunConfig, seed: int = 0) -> int:
    """Bytes of the distinct storages autograd saves during one training step of ``config``.

    Measured on the per-task loop (``vectorize`` off: saved-tensor hooks do not see inside
    vmap), at the run's training ways, shots and queries; a method that pre-trains on
    minibatches (Baseline) on one of its minibatches, as its training loop draws them.
    """
    config = config.model_copy(update={"vectorize": False})
    sampler = _train_sampler(
        config, config.effective_train_ways, config.effective_train_shots, config.train_queries
    )
    torch.manual_seed(seed)
    plan = plan_run(config)
    algorithm = plan.algorithm
    config, source = plan.training(sampler.store, sampler)  # Baseline: one of its minibatches
    model = algorithm.build(config, sampler.store.image_shape[0])
    optimizer = algorithm.optimizer(model, config)
    episodes = [source.sample(torch.Generator().manual_seed(seed + j)) for j in range(config.meta_batch)]
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        algorithm.train_step(model, optimizer, episodes)
    return sum(seen.values())
