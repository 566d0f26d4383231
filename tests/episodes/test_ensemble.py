"""Ensembles sum their members' ProtoNet logits; test-time augmentation is fixed and averages views."""

from __future__ import annotations

import torch
from torch import nn

from fewnorm.episodes.ensemble import AugmentedViews, EmbeddingEnsemble
from fewnorm.episodes.protonet import protonet_logits
from fewnorm.episodes.sampler import Episode


def _episode() -> Episode:
    gen = torch.Generator().manual_seed(0)
    support, query = torch.rand(5, 1, 28, 28, generator=gen), torch.rand(10, 1, 28, 28, generator=gen)
    return Episode(support, torch.arange(5), query, torch.arange(5).repeat(2), 5, 1, 2)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def test_an_ensemble_sums_its_members_logits() -> None:
    members = [_net(s) for s in range(3)]
    episode = _episode()
    together = protonet_logits(EmbeddingEnsemble(members), episode)
    apart = sum(protonet_logits(m, episode) for m in members)
    assert torch.allclose(together, apart, atol=1e-5)


def test_tta_without_views_is_the_model_and_is_fixed_by_its_seed() -> None:
    net, x = _net(0), _episode().query
    assert torch.equal(AugmentedViews(net, 0)(x), net(x))
    a, b, c = (
        AugmentedViews(net, 4, seed=1),
        AugmentedViews(net, 4, seed=1),
        AugmentedViews(net, 4, seed=2),
    )
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a(x).shape == net(x).shape
