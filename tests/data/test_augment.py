"""Batched episode augmentation: each part's formula, reproducibility, and its use in training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewnorm.config import RunConfig
from fewnorm.data.augment import STANDARD, Augmentation, augment_episode, augment_images
from fewnorm.episodes import loop
from fewnorm.episodes.sampler import Episode, EpisodeSampler
from tests.episodes.test_sampler import make_store

OFF = Augmentation(padding=0, brightness=0.0, contrast=0.0, saturation=0.0, flip=0.0)


def _images(n: int = 6, c: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_standard_parameters() -> None:
    assert (STANDARD.brightness, STANDARD.contrast, STANDARD.saturation, STANDARD.flip) == (
        0.4,
        0.4,
        0.4,
        0.5,
    )
    assert (STANDARD.pad_for(84), STANDARD.pad_for(28)) == (8, 3)


def test_shape_range_and_reproducibility() -> None:
    x = _images()
    out = augment_images(x, _gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(out, augment_images(x, _gen(1)))
    assert not torch.equal(out, augment_images(x, _gen(2)))
    assert torch.equal(augment_images(x, _gen(1), OFF), x)


def test_crop_is_a_shift_of_the_zero_padded_image() -> None:
    x, pad = _images(n=8, size=10), 3
    out = augment_images(x, _gen(), Augmentation(padding=pad, brightness=0, contrast=0, saturation=0, flip=0))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = set()
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 10])
        ]
        assert found, f"image {i} is not a crop"
        shifts.add(found[0])
    assert len(shifts) > 1  # offsets differ across the batch


def test_flip_and_brightness_follow_their_formulas() -> None:
    x = _images()
    flipped = augment_images(
        x, _gen(), Augmentation(padding=0, brightness=0, contrast=0, saturation=0, flip=1.0)
    )
    assert torch.equal(flipped, x.flip(-1))
    dim = x * 0.5  # no clamping at the top
    bright = augment_images(
        dim, _gen(), Augmentation(padding=0, brightness=0.4, contrast=0, saturation=0, flip=0)
    )
    ratio = bright / dim  # one factor per image in [0.6, 1.4]
    per_image = ratio.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert ((per_image[:, 0] >= 0.6) & (per_image[:, 0] <= 1.4)).all()


def test_contrast_keeps_the_mean_grey_and_saturation_keeps_luma() -> None:
    x = _images(seed=3) * 0.5 + 0.25  # away from the clamps
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    contrast = augment_images(
        x, _gen(), Augmentation(padding=0, brightness=0, contrast=0.2, saturation=0, flip=0)
    )
    torch.testing.assert_close((contrast * luma).sum(1).mean((1, 2)), (x * luma).sum(1).mean((1, 2)))
    sat = augment_images(x, _gen(), Augmentation(padding=0, brightness=0, contrast=0, saturation=0.4, flip=0))
    torch.testing.assert_close((sat * luma).sum(1), (x * luma).sum(1))
    assert not torch.allclose(sat, x)


def test_single_channel_and_episode() -> None:
    sampler = EpisodeSampler(make_store(size=28), ways=3, shots=2, queries=4)
    episode = sampler.sample(_gen())
    out = augment_episode(episode, _gen(5))
    assert out.support.shape == episode.support.shape and out.query.shape == episode.query.shape
    assert torch.equal(out.support_labels, episode.support_labels)
    assert torch.equal(out.query_labels, episode.query_labels)
    assert not torch.equal(out.query, episode.query)


def test_training_augments_each_training_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fewnorm.data.load_split", lambda dataset, split, root=None: make_store(size=28))
    seen: list[torch.Generator] = []
    real = loop.augment_episode

    def spy(episode: Episode, generator: torch.Generator) -> Episode:
        seen.append(generator)
        return real(episode, generator)

    monkeypatch.setattr(loop, "augment_episode", spy)
    config = RunConfig(
        norm="groupnorm", hidden=8, episodes=2, val_every=2, val_episodes=1, test_episodes=1,
        train_ways=3, train_queries=2, queries=2, meta_batch=2, augment=True,
    )  # fmt: skip
    loop.train(config, tmp_path / "run")
    assert len(seen) == 4  # each training episode of each step; none at validation or test
    assert all(g is seen[0] for g in seen)  # the training generator, so runs are reproducible
