"""The "Beyond BatchNorm" probe: each metric by hand, the hooks, and the paper's findings on Conv-4."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fewnorm.backbones import Conv4
from fewnorm.episodes.protonet import protonet_loss
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.probe import (
    LayerStats,
    activation_variance,
    average_stats,
    gradient_norm,
    mean_cosine_similarity,
    norm_layers,
    normalizer_type,
    probe_model,
    stable_rank,
)
from tests.episodes.test_sampler import make_store

C = 1 / math.sqrt(2)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions run fastest on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_activation_variance_by_hand() -> None:
    a = torch.zeros(2, 2, 1, 2)
    a[0, 0] = torch.tensor([1.0, 1.0])
    a[1, 0] = torch.tensor([3.0, 3.0])  # channel 0: values 1, 1, 3, 3 -> population variance 1
    a[:, 1] = 5.0  # channel 1: constant -> 0
    assert activation_variance(a) == pytest.approx(0.5)
    assert activation_variance(torch.tensor([[1.0], [3.0]])) == pytest.approx(1.0)  # (N, C) too


def test_cosine_similarity_by_hand() -> None:
    two = torch.tensor([[1.0, 0.0], [2.0, 2.0]])  # angle 45 degrees, norms irrelevant
    assert mean_cosine_similarity(two) == pytest.approx(C)
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # pairs: 0, C, C
    assert mean_cosine_similarity(three) == pytest.approx(2 * C / 3)
    images = three.view(3, 2, 1, 1)  # (N, C, H, W) is flattened per sample
    assert mean_cosine_similarity(images) == pytest.approx(2 * C / 3)
    with_zero = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # a dead sample: similarity 0, no NaN
    assert mean_cosine_similarity(with_zero) == 0.0


def test_stable_rank_by_hand() -> None:
    assert stable_rank(torch.eye(4)) == pytest.approx(4.0)  # orthogonal samples: full rank
    assert stable_rank(torch.ones(5, 3)) == pytest.approx(1.0)  # identical samples: collapsed
    # M = [[1, c], [c, 1]] has eigenvalues 1 +- c: tr / ||M||_2 = 2 / (1 + c)
    assert stable_rank(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx(2 / (1 + C))


def test_gradient_norm_by_hand() -> None:
    assert gradient_norm(torch.tensor([[3.0, 0.0], [0.0, 4.0]])) == pytest.approx(5.0)


def test_average_over_seeds() -> None:
    a = [LayerStats(0, "l", 1.0, 0.2, 3.0, 4.0)]
    b = [LayerStats(0, "l", 3.0, 0.4, 5.0, 6.0)]
    assert average_stats([a, b]) == [LayerStats(0, "l", 2.0, pytest.approx(0.3), 4.0, 5.0)]  # type: ignore[arg-type]


def _episode(seed: int = 0) -> object:
    return EpisodeSampler(make_store(size=28), 5, 1, 2).sample(torch.Generator().manual_seed(seed))


def test_hooks_measure_post_norm_activations_and_conv_gradients() -> None:
    torch.manual_seed(0)
    model = Conv4(1, 6, "batchnorm")
    layers = norm_layers(model, normalizer_type("batchnorm", {}, 1, 6))
    assert [name for name, _ in layers] == [f"blocks.{i}.1" for i in range(4)]
    stats = probe_model(model, layers, _episode(), owns_conv=False, loss=protonet_loss)
    assert [s.layer for s in stats] == [0, 1, 2, 3]
    assert all(s.variance == pytest.approx(1.0, abs=0.02) for s in stats)  # BN standardizes per channel

    # the same gradient norms from hooks on the convs themselves
    torch.manual_seed(0)
    again = Conv4(1, 6, "batchnorm")
    convs: list[list[torch.Tensor]] = [[] for _ in range(4)]

    def keep(i: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            out.retain_grad()
            convs[i].append(out)

        return hook

    for i, block in enumerate(again.blocks):
        block[0].register_forward_hook(keep(i))

    again.train()
    protonet_loss(again, _episode())[0].backward()
    for i, s in enumerate(stats):
        grads = torch.cat([z.grad for z in convs[i]])  # type: ignore[misc]
        assert s.grad_norm == pytest.approx(float(grads.double().norm()), rel=1e-6)


def test_conv_kind_normalizers_are_probed_on_their_own_output() -> None:
    torch.manual_seed(0)
    model = Conv4(1, 6, "patchnorm")
    layers = norm_layers(model, normalizer_type("patchnorm", {}, 1, 6), owns_conv=True)
    assert [name for name, _ in layers] == [f"blocks.{i}.0" for i in range(4)]
    stats = probe_model(model, layers, _episode(), owns_conv=True, loss=protonet_loss)
    assert all(s.grad_norm > 0 and math.isfinite(s.variance) for s in stats)


def test_identity_outside_conv_blocks_is_not_a_layer() -> None:
    from torch import nn

    model = nn.Sequential(Conv4(1, 4, "none"), nn.Identity())
    layers = norm_layers(model, normalizer_type("none", {}, 1, 4))
    assert [name for name, _ in layers] == [f"0.blocks.{i}.1" for i in range(4)]


def _probe(norm: str, options: dict, store: object, seeds: range, hidden: int = 32) -> list[LayerStats]:
    sampler = EpisodeSampler(store, 5, 1, 5)  # type: ignore[arg-type]
    kind = normalizer_type(norm, options, 1, hidden)
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = Conv4(1, hidden, norm, options)
        episode = sampler.sample(torch.Generator().manual_seed(seed))
        runs.append(
            probe_model(model, norm_layers(model, kind), episode, owns_conv=False, loss=protonet_loss)
        )
    return average_stats(runs)


@pytest.mark.data
def test_beyond_batchnorm_findings_at_initialization(omniglot_root: Path) -> None:
    """Lubana et al.: larger groups raise cross-sample similarity in deeper layers (LayerNorm);
    small groups raise early-layer gradient norms (InstanceNorm); without normalization the
    activation variance collapses with depth while BatchNorm keeps it at one."""
    from fewnorm.data import load_split

    store = load_split("omniglot-minimal", "train", str(omniglot_root))
    seeds = range(3)
    layer_norm = _probe("groupnorm", {"groups": 1}, store, seeds)  # G = 1: LayerNorm
    instance_norm = _probe("groupnorm", {"groups": 32}, store, seeds)  # G = C: InstanceNorm
    for deep in (2, 3):
        assert layer_norm[deep].cosine > instance_norm[deep].cosine + 0.1
        assert layer_norm[deep].stable_rank < instance_norm[deep].stable_rank
    assert instance_norm[0].grad_norm > 2 * layer_norm[0].grad_norm
    none = _probe("none", {}, store, seeds)
    batch = _probe("batchnorm", {}, store, seeds)
    assert none[3].variance < none[0].variance / 10
    assert all(s.variance == pytest.approx(1.0, abs=0.05) for s in batch)
