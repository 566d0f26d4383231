"""The episode sampler: shapes, labels, distinct images, fixed episodes, impossible requests."""

from __future__ import annotations

import pytest
import torch

from fewnorm.data.store import ImageStore
from fewnorm.episodes import sampler as sampler_module
from fewnorm.episodes.sampler import EpisodeSampler
from fewnorm.errors import ConfigError


def make_store(classes: int = 12, per_class: int = 20, size: int = 4) -> ImageStore:
    """Image ``j`` of class ``c`` is filled with a unique code so gathers can be decoded."""
    per = []
    for c in range(classes):
        codes = torch.arange(per_class) + 20 * c  # < 256 for these sizes
        per.append(codes.view(-1, 1, 1, 1).expand(-1, 1, size, size).to(torch.uint8).clone())
    return ImageStore.from_classes(per, [f"class{c}" for c in range(classes)])


def _codes(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0, 0, 0] * 255).round().long()  # (n,)


def test_episode_shapes_labels_and_classes() -> None:
    store = make_store()
    sampler = EpisodeSampler(store, ways=5, shots=2, queries=3)
    ep = sampler.sample(torch.Generator().manual_seed(0))
    assert ep.support.shape == (10, 1, 4, 4) and ep.query.shape == (15, 1, 4, 4)
    assert ep.support.dtype == torch.float32 and float(ep.support.max()) <= 1.0
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_labels.tolist() == [i for i in range(5) for _ in range(3)]
    s_codes, q_codes = _codes(ep.support), _codes(ep.query)
    s_class, q_class = s_codes // 20, q_codes // 20
    # every label maps to one class, the same in support and query, 5 distinct classes
    for label in range(5):
        classes = set(s_class[ep.support_labels == label].tolist()) | set(
            q_class[ep.query_labels == label].tolist()
        )
        assert len(classes) == 1
    assert len(set(s_class.tolist())) == 5
    # no image appears twice in an episode
    all_codes = torch.cat([s_codes, q_codes]).tolist()
    assert len(all_codes) == len(set(all_codes))


def test_uneven_class_sizes_never_gather_past_a_class() -> None:
    per = [torch.full((n, 1, 2, 2), c, dtype=torch.uint8) for c, n in enumerate([3, 9, 4, 7])]
    store = ImageStore.from_classes(per, list("abcd"))
    sampler = EpisodeSampler(store, ways=4, shots=1, queries=2)
    for seed in range(50):
        ep = sampler.sample(torch.Generator().manual_seed(seed))
        codes = (ep.support[:, 0, 0, 0] * 255).round().long()
        q = (ep.query[:, 0, 0, 0] * 255).round().long().view(4, 2)
        assert torch.equal(q, codes[:, None].expand(4, 2))  # query of a label = its class


def test_fixed_episodes_are_reproducible_and_distinct() -> None:
    sampler = EpisodeSampler(make_store(), ways=5, shots=1, queries=2)
    a, b = sampler.fixed(3, base_seed=100), sampler.fixed(3, base_seed=100)
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    other = sampler.fixed(4, base_seed=100)
    assert not torch.equal(a.query, other.query)
    same_seed = sampler.sample(torch.Generator().manual_seed(103))
    assert torch.equal(same_seed.query, a.query)


@pytest.mark.parametrize(
    ("ways", "shots", "queries", "match"),
    [
        (13, 1, 1, "need 13 classes but there are 12"),
        (5, 15, 6, "exceeds the 20 images"),
        (0, 1, 1, "ways must be a positive"),
        (5, -1, 1, "shots must be a positive"),
        (5, 1, 0, "queries must be a positive"),
    ],
)
def test_impossible_requests_rejected(ways: int, shots: int, queries: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EpisodeSampler(make_store(), ways=ways, shots=shots, queries=queries)


def reference_episode(store: ImageStore, ways: int, shots: int, queries: int, g: torch.Generator) -> tuple:
    """The sampling rule written plainly: the same draws, one class at a time, stable sorts."""
    k, max_size = shots + queries, int(store.class_sizes.max())
    classes = torch.randperm(store.num_classes, generator=g)[:ways]
    keys = torch.rand(ways, max_size, generator=g)
    support, query = [], []
    for w, c in enumerate(classes.tolist()):
        size, start = int(store.class_sizes[c]), int(store.class_starts[c])
        picks = keys[w, :size].argsort(stable=True)[:k] + start
        images = store.images[picks].float() / 255.0
        support.append(images[:shots])
        query.append(images[shots:])
    return torch.cat(support), torch.cat(query)


@pytest.mark.parametrize("float_cache", [True, False], ids=["float-cache", "uint8"])
@pytest.mark.parametrize("sizes", [None, [3, 9, 4, 7, 20, 5]], ids=["even", "uneven"])
def test_episodes_equal_the_reference_rule(
    float_cache: bool, sizes: list[int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Support-first gathers, numpy index arithmetic and both image paths draw the reference's episodes."""
    if not float_cache:
        monkeypatch.setattr(sampler_module, "FLOAT_CACHE_BYTES", 0)
    if sizes is None:
        store = make_store()
    else:
        codes = torch.randperm(256)[: sum(sizes)].to(torch.uint8)
        per = [c.view(-1, 1, 1, 1).expand(-1, 1, 2, 3).clone() for c in codes.split(sizes)]
        store = ImageStore.from_classes(per, [f"c{i}" for i in range(len(sizes))])
    sampler = EpisodeSampler(store, ways=4, shots=2, queries=1)
    assert (sampler._floats is not None) == float_cache
    for seed in range(30):
        ep = sampler.sample(torch.Generator().manual_seed(seed))
        support, query = reference_episode(store, 4, 2, 1, torch.Generator().manual_seed(seed))
        assert torch.equal(ep.support, support) and torch.equal(ep.query, query)
        assert ep.support.is_contiguous() and ep.query.is_contiguous()
