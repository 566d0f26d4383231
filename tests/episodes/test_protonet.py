"""Prototypical Networks: prototypes, distances, loss, and that a training step learns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewnorm.backbones import Conv4
from fewnorm.episodes.protonet import (
    protonet_evaluate,
    protonet_logits,
    protonet_train_step,
    prototypes,
    squared_distances,
)
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from fewnorm.norms import list_norms
from tests.episodes.test_sampler import make_store


def test_prototypes_are_class_means() -> None:
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [0.0, 7.0]])
    labels = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(prototypes(z, labels, 2), torch.tensor([[2.0, 1.0], [0.0, 6.0]]))


def test_squared_distances_match_cdist() -> None:
    q, p = torch.randn(7, 5), torch.randn(3, 5)
    torch.testing.assert_close(squared_distances(q, p), torch.cdist(q, p).pow(2), atol=1e-5, rtol=1e-5)


def test_logits_with_identity_embedding_pick_nearest_prototype() -> None:
    support = torch.tensor([[0.0], [10.0]]).view(2, 1, 1, 1)
    query = torch.tensor([[1.0], [9.0], [6.0]]).view(3, 1, 1, 1)
    ep = Episode(support, torch.tensor([0, 1]), query, torch.tensor([0, 1, 1]), 2, 1, 1)
    logits = protonet_logits(nn.Flatten(), ep)
    torch.testing.assert_close(logits, -torch.tensor([[1.0, 81.0], [81.0, 1.0], [36.0, 16.0]]))


def test_training_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    store = make_store(classes=10, per_class=20, size=8)
    # make classes separable but not trivially so: add per-image noise
    noise = torch.randint(0, 40, store.images.shape, generator=torch.Generator().manual_seed(1))
    store.images = (store.images.int() + noise).clamp(0, 255).to(torch.uint8)
    sampler = EpisodeSampler(store, ways=5, shots=1, queries=5)
    model = Conv4(in_channels=1, hidden=16, norm="batchnorm", depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    fixed = sampler.fixed(0, 99)
    before = protonet_evaluate(model, fixed)
    losses = [protonet_train_step(model, opt, sampler.sample(gen)).loss for _ in range(40)]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert protonet_evaluate(model, fixed) >= before


def _trained_logits(mode: str, one_at_a_time: bool) -> torch.Tensor:
    torch.manual_seed(0)
    store = make_store(classes=10, per_class=20, size=8)
    sampler = EpisodeSampler(store, ways=5, shots=1, queries=4)
    model = Conv4(in_channels=1, hidden=8, norm="batchnorm", norm_options={"mode": mode}, depth=2)
    model.eval()
    with torch.no_grad():
        return protonet_logits(model, sampler.fixed(0, 7), one_at_a_time=one_at_a_time)


def test_one_query_at_a_time_exposes_transductive_batchnorm() -> None:
    together, alone = _trained_logits("transductive", False), _trained_logits("transductive", True)
    assert not torch.allclose(together, alone, atol=1e-4)
    torch.testing.assert_close(_trained_logits("support", False), _trained_logits("support", True))


@pytest.mark.parametrize("norm", [s.name for s in list_norms()])
def test_every_normalizer_trains_without_nan(norm: str) -> None:
    torch.manual_seed(0)
    store = make_store(classes=10, per_class=20, size=28)
    sampler = EpisodeSampler(store, ways=5, shots=1, queries=3)
    model = Conv4(in_channels=1, hidden=16, norm=norm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        result = protonet_train_step(model, opt, sampler.sample(gen))
        assert math.isfinite(result.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert 0.0 <= protonet_evaluate(model, sampler.fixed(0, 5)) <= 1.0
